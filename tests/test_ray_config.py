"""The bundled Ray Serve config is one Ray's own `serve deploy` accepts, and its import path builds the
application with the options it names (checked without starting Ray)."""

from __future__ import annotations

import importlib

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from triptych.apps.serve.cluster import DEFAULT_CONFIG, read_config


def test_serve_deploy_accepts_the_bundled_config():
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    schema = ServeDeploySchema.parse_obj(data)  # what `serve deploy` validates before deploying
    assert schema.http_options.host == "127.0.0.1"
    (app,) = schema.applications
    module, name = app.import_path.split(":")
    build = getattr(importlib.import_module(module), name)
    application = build({**app.args, "deployments": data["applications"][0]["deployments"]})
    assert application is not None
    encoder = next(d for d in app.deployments if d.name == "Encoder")
    assert encoder.num_replicas == 2


def test_a_config_without_the_application_is_refused(tmp_path):
    bad = tmp_path / "serve.yaml"
    bad.write_text("applications: []\n")
    with pytest.raises(ValueError, match="triptych application"):
        read_config(bad)
    other = tmp_path / "other.yaml"
    other.write_text("applications:\n  - {name: a, import_path: x:y}\n  - {name: b, import_path: x:z}\n")
    with pytest.raises(ValueError, match="no application named 'triptych'"):
        read_config(other)
