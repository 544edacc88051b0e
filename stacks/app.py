"""Builds the whole app: one bootstrap stack, then a project stack and an MLflow stack per environment."""

from __future__ import annotations

from constructs.cdk import App
from stacks.bootstrap import BootstrapStack
from stacks.config import Config, bootstrap_owner
from stacks.mlflow import MlflowStack
from stacks.project import ProjectStack
from stacks.providers import TARGET_VERSIONS


def build_app(configs: list[Config], outdir: str | None = None) -> App:
    # targetVersions: also without the CLI (tests, `python main.py`), which otherwise passes it from cdktf.json.
    context = {"targetVersions": TARGET_VERSIONS}
    app = App(outdir=outdir, context=context) if outdir else App(context=context)
    BootstrapStack(app, bootstrap_owner(configs))
    for cfg in configs:
        project = ProjectStack(app, cfg)
        MlflowStack(app, cfg).add_dependency(project)
    return app
