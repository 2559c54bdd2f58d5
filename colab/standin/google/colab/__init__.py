"""A stand-in for Colab's `google.colab`, for the Colab rehearsal (`make colab-rehearsal`) and the tests.

It offers what the course calls, with Colab's names and failure modes: `drive.mount` links the mount
point to a local folder that outlives each rehearsed runtime (as Google Drive outlives a Colab VM),
and `userdata.get` reads secrets from a local JSON file. The rehearsal's kernel imports this package
before any cell runs, as Colab's kernel does, so `"google.colab" in sys.modules` holds.
"""

from . import drive, userdata

__all__ = ["drive", "userdata"]
