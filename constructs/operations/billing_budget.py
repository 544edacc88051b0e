"""A monthly budget on the project's spend, with e-mails as it is reached and when it is forecast."""

from __future__ import annotations

import re
from dataclasses import dataclass

from constructs import Construct
from constructs.cdk import TerraformProvider
from constructs.cdk.google.billing_budget import (
    BillingBudget as BillingBudgetResource,
    BillingBudgetAllUpdatesRule,
    BillingBudgetAmount,
    BillingBudgetAmountSpecifiedAmount,
    BillingBudgetBudgetFilter,
    BillingBudgetThresholdRules,
)

BILLING_ACCOUNT = re.compile(r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$")
# Spend already incurred, as fractions of the amount; plus 100% of the month's forecast.
CURRENT_SPEND_THRESHOLDS = (0.5, 0.9, 1.0)


@dataclass(frozen=True)
class BillingBudgetProps:
    billing_account: str
    project_number: str
    display_name: str
    monthly_usd: int
    # default: only the billing account's administrators and users are e-mailed (Cloud Billing's
    # default recipients). Monitoring channel ids here are e-mailed as well (at most 5).
    notification_channels: tuple[str, ...] = ()
    # The provider the budget is created with: with user credentials the Billing Budgets API needs a
    # quota project (`billing_project` + `user_project_override`), which the stack configures.
    provider: TerraformProvider | None = None

    def __post_init__(self) -> None:
        if not BILLING_ACCOUNT.match(self.billing_account):
            raise ValueError(
                f"BillingBudgetProps.billing_account: {self.billing_account!r} is not XXXXXX-XXXXXX-XXXXXX"
            )
        if self.monthly_usd < 1:
            raise ValueError(f"BillingBudgetProps.monthly_usd: {self.monthly_usd} must be 1 or more")
        if len(self.notification_channels) > 5:
            raise ValueError("BillingBudgetProps.notification_channels: a budget notifies at most 5 channels")


class BillingBudget(Construct):
    """Scoped to this project only, whole-dollar amount in USD (the billing account must bill in USD),
    credits included (what is actually charged)."""

    def __init__(self, scope: Construct, id: str, props: BillingBudgetProps) -> None:
        super().__init__(scope, id)
        BillingBudgetResource(
            self,
            "budget",
            provider=props.provider,
            billing_account=props.billing_account,
            display_name=props.display_name,
            budget_filter=BillingBudgetBudgetFilter(
                projects=[f"projects/{props.project_number}"],
                calendar_period="MONTH",
                credit_types_treatment="INCLUDE_ALL_CREDITS",
            ),
            amount=BillingBudgetAmount(
                specified_amount=BillingBudgetAmountSpecifiedAmount(currency_code="USD", units=str(props.monthly_usd))
            ),
            threshold_rules=[
                *(
                    BillingBudgetThresholdRules(threshold_percent=f, spend_basis="CURRENT_SPEND")
                    for f in CURRENT_SPEND_THRESHOLDS
                ),
                BillingBudgetThresholdRules(threshold_percent=1.0, spend_basis="FORECASTED_SPEND"),
            ],
            all_updates_rule=BillingBudgetAllUpdatesRule(
                monitoring_notification_channels=list(props.notification_channels) or None,
                disable_default_iam_recipients=False,
            ),
        )
