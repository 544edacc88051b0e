"""Where Cloud Run mounts the Cloud SQL sockets: the one definition of that path.

The Cloud Run API requires this path for a Cloud SQL volume; the backend store URI's `host=` and the
config's refusal of it as the artifact mount read it from here. No binding is imported, so the
configuration can use it before anything heavy loads.
"""

CLOUDSQL_MOUNT = "/cloudsql"
