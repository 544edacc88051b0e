"""Service accounts and who may act as them: the server's (and its project roles), each person's
client account, CI's (keyless, WIF), the image build's, the IAP service agent, and the keyed IAM
member helpers every grant uses.

May import: constructs.cdk, this package, and constructs.data (the build identity's bucket).
"""
