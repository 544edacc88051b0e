"""Cloud Run's deterministic names for a service, with no CDK import: the config reads this file too."""


def run_app_host(service_name: str, project_number: str, region: str) -> str:
    """The host of the deterministic URL Cloud Run gives a service: SERVICE-PROJECT_NUMBER.REGION.run.app."""
    return f"{service_name}-{project_number}.{region}.run.app"


def signed_header_audience(service_name: str, project_number: str, region: str) -> str:
    """The `aud` of the x-goog-iap-jwt-assertion header IAP adds in front of this service."""
    return f"/projects/{project_number}/locations/{region}/services/{service_name}"
