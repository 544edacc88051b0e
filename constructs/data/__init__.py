"""What holds the users' data and the server's secrets: Cloud SQL, the artifact bucket, the
backend-store and AI-gateway-key secrets, and the Cloud SQL socket path both the backend-store
secret's URI and the server's mount use.

May import: constructs.cdk and this package.
"""
