"""google.colab.userdata: Colab's secrets (the key icon), read here from the JSON file $COLAB_STANDIN_SECRETS."""

import json
import os


class SecretNotFoundError(KeyError):
    """No secret of that name."""


class NotebookAccessError(PermissionError):
    """The secret exists but this notebook was not granted access to it."""


def get(key: str) -> str:
    path = os.environ.get("COLAB_STANDIN_SECRETS", "")
    secrets = json.loads(open(path).read()) if path and os.path.exists(path) else {}
    if key not in secrets:
        raise SecretNotFoundError(f"Secret {key} does not exist.")
    return secrets[key]
