"""The tracking server on Cloud Run: the service, the migration job, the schema-upgrade window, the
container both run, and the run.app address and IAP audience of a service.

May import: constructs.cdk, this package, and constructs.data (the Cloud SQL socket path).
"""
