"""What the service and the job share with the image: the user the GCS volume is mounted for."""

import re
from pathlib import Path

from constructs.server_container import IMAGE_GID, IMAGE_UID

DOCKERFILE = Path(__file__).resolve().parents[2] / "docker" / "Dockerfile"


def test_the_mount_options_name_the_user_the_image_runs_as():
    """docker/Dockerfile creates and runs as this uid/gid; a change there must change the constant."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^USER (\d+):(\d+)$", text, re.M).groups() == (str(IMAGE_UID), str(IMAGE_GID))
    assert f"--gid {IMAGE_GID} mlflow" in text
    assert f"--uid {IMAGE_UID} --gid mlflow" in text
