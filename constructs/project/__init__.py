"""Project plumbing applied before the server: the enabled APIs and the image registry.

May import: constructs.cdk only.
"""
