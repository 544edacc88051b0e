"""Watching and paying for it: alert policies and the dashboard, the billing budget, and the
Data Access audit logs of Cloud Storage.

May import: constructs.cdk only.
"""
