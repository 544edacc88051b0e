"""Service accounts and who may act as them: the server's (and its project roles), each person's
client account, CI's (keyless, WIF), the image build's, the IAP service agent, the keyed IAM
member helpers every grant uses, and what MLflow's own permissions give each verified user
([access]: the bootstrap admin's secret and the access model the server reads).

May import: constructs.cdk, this package, and constructs.data (the build identity's bucket).
"""
