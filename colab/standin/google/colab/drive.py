"""google.colab.drive: `mount` links the mount point to $COLAB_STANDIN_DRIVE (a folder that persists
between rehearsed runtimes). COLAB_STANDIN_DRIVE_REFUSED=1 makes it fail as Colab does when the learner
does not allow access."""

import os
from pathlib import Path


class MessageError(RuntimeError):
    """Colab's error when a request to the browser (here: Drive access) fails."""


def mount(mountpoint: str, force_remount: bool = False, timeout_ms: int = 120000, readonly: bool = False) -> None:
    if os.environ.get("COLAB_STANDIN_DRIVE_REFUSED"):
        raise MessageError("Error: credential propagation was unsuccessful")
    drive = Path(os.environ["COLAB_STANDIN_DRIVE"])
    (drive / "MyDrive").mkdir(parents=True, exist_ok=True)
    point = Path(mountpoint)
    if point.is_symlink() and point.resolve() == drive.resolve() and not force_remount:
        print(f"Drive already mounted at {mountpoint}; to attempt to forcibly remount, call "
              f'drive.mount("{mountpoint}", force_remount=True).')
        return
    if point.is_symlink():
        point.unlink()
    point.parent.mkdir(parents=True, exist_ok=True)
    point.symlink_to(drive, target_is_directory=True)
    print(f"Mounted at {mountpoint}")
