"""How users reach the server: the external Application Load Balancer with IAP, or IAP directly
on the Cloud Run service, and the DNS zone that points the domain at the load balancer.

May import: constructs.cdk, this package, and constructs.identity (keyed IAM members).
"""
