"""The VPC, its subnet and firewall, and private services access (Cloud SQL's private IP range).

May import: constructs.cdk only.
"""
