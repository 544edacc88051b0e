"""What the service and the job share with the image: the user the GCS volume is mounted for."""

import re
from pathlib import Path

from constructs.serving.server_container import IMAGE_GID, IMAGE_UID

DOCKERFILE = Path(__file__).resolve().parents[3] / "docker" / "Dockerfile"


def test_the_mount_options_name_the_user_the_image_runs_as():
    """docker/Dockerfile creates and runs as this uid/gid; a change there must change the constant."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^USER (\d+):(\d+)$", text, re.M).groups() == (str(IMAGE_UID), str(IMAGE_GID))
    assert f"--gid {IMAGE_GID} mlflow" in text
    assert f"--uid {IMAGE_UID} --gid mlflow" in text


def test_every_gcs_volume_of_the_service_and_the_job_is_mounted_as_the_images_user(mlflow, mlflow_prod):
    """The service mounts the bucket; the job mounts none today (it needs only the database)."""
    paths = {"google_cloud_run_v2_service": ("template",), "google_cloud_run_v2_job": ("template", "template")}
    gcs_volumes = []
    for stack in (mlflow, mlflow_prod):
        for type_, path in paths.items():
            for body in stack["resource"][type_].values():
                for key in path:
                    body = body[key]
                gcs_volumes += [(type_, v) for v in body["volumes"] if "gcs" in v]
    assert [t for t, _ in gcs_volumes] == ["google_cloud_run_v2_service"] * 2
    for type_, volume in gcs_volumes:
        assert volume["gcs"]["mount_options"] == [f"uid={IMAGE_UID}", f"gid={IMAGE_GID}"], type_
