"""The billing budget: only with [budget]; this project's monthly spend, e-mails at 50/90/100% and a forecast."""

from __future__ import annotations

import pytest

from constructs.operations.billing_budget import BillingBudgetProps
from tests.synth import one, resources


def test_without_a_budget_table_there_is_no_budget_nor_its_api_nor_its_provider(mlflow, project_stack):
    assert not resources(mlflow, "google_billing_budget")
    assert [p for p in mlflow["provider"]["google"] if p.get("alias")] == []
    assert "apis/billingbudgets" not in resources(project_stack, "google_project_service")


def test_the_budget_watches_this_project_in_usd(mlflow_prod):
    budget = one(mlflow_prod, "google_billing_budget")
    assert budget["billing_account"] == "012345-6789AB-CDEF01"
    assert budget["budget_filter"] == {
        "projects": ["projects/210987654321"],
        "calendar_period": "MONTH",
        "credit_types_treatment": "INCLUDE_ALL_CREDITS",
    }
    assert budget["amount"] == {"specified_amount": {"currency_code": "USD", "units": "150"}}


def test_the_budget_mails_at_half_ninety_and_full_spend_and_on_a_full_forecast(mlflow_prod):
    rules = one(mlflow_prod, "google_billing_budget")["threshold_rules"]
    assert [(r["threshold_percent"], r["spend_basis"]) for r in rules] == [
        (0.5, "CURRENT_SPEND"),
        (0.9, "CURRENT_SPEND"),
        (1, "CURRENT_SPEND"),
        (1, "FORECASTED_SPEND"),
    ]


def test_the_budget_mails_the_alert_channels_and_the_billing_admins(mlflow_prod):
    rule = one(mlflow_prod, "google_billing_budget")["all_updates_rule"]
    channels = sorted(
        f"${{google_monitoring_notification_channel.{k}.id}}"
        for k in mlflow_prod["resource"]["google_monitoring_notification_channel"]
    )
    assert sorted(rule["monitoring_notification_channels"]) == channels
    assert rule["disable_default_iam_recipients"] is False


def test_the_budget_alone_uses_a_provider_with_a_quota_project(mlflow_prod):
    """The Billing Budgets API refuses user ADC without billing_project + user_project_override."""
    budget = one(mlflow_prod, "google_billing_budget")
    assert budget["provider"] == "google.billing"
    aliased = [p for p in mlflow_prod["provider"]["google"] if p.get("alias") == "billing"]
    assert aliased == [
        {
            "alias": "billing",
            "project": "example-mlflow-prod",
            "billing_project": "example-mlflow-prod",
            "user_project_override": True,
        }
    ]
    default = [p for p in mlflow_prod["provider"]["google"] if "alias" not in p]
    assert len(default) == 1 and "user_project_override" not in default[0]
    others = [b for t, items in mlflow_prod["resource"].items() if t != "google_billing_budget" for b in items.values()]
    assert not [b for b in others if b.get("provider") == "google.billing"]


def test_the_project_stack_enables_the_budget_api_when_a_budget_is_configured(app):
    services = {s["service"] for s in resources(app.stacks["mlflow-prod-project"], "google_project_service").values()}
    assert "billingbudgets.googleapis.com" in services


@pytest.mark.parametrize(
    "change, message",
    [
        ({"billing_account": "billingAccounts/012345-6789AB-CDEF01"}, "BillingBudgetProps.billing_account"),
        ({"monthly_usd": 0}, "BillingBudgetProps.monthly_usd"),
        ({"notification_channels": tuple(f"c{i}" for i in range(6))}, "at most 5"),
    ],
)
def test_budget_props_that_make_no_sense_are_refused(change, message):
    base = dict(billing_account="012345-6789AB-CDEF01", project_number="1", display_name="b", monthly_usd=10)
    with pytest.raises(ValueError, match=message):
        BillingBudgetProps(**{**base, **change})
