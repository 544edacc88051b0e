"""Builds the whole app: one bootstrap stack, then a project stack and an MLflow stack per environment."""

from __future__ import annotations

from cdktf import App

from stacks.bootstrap import BootstrapStack
from stacks.config import Config
from stacks.mlflow import MlflowStack
from stacks.project import ProjectStack


def build_app(configs: list[Config], outdir: str | None = None) -> App:
    app = App(outdir=outdir) if outdir else App()
    BootstrapStack(app, configs[0])
    for cfg in configs:
        project = ProjectStack(app, cfg)
        MlflowStack(app, cfg).add_dependency(project)
    return app
