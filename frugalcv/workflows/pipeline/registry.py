"""The model registry side of a pipeline: register its final model, read registered models back.

Registering: the last stage (in pipeline order) whose registration declares ``model=<output>``
and that ran in this pipeline run gives the pipeline's model. Its stage run gets a small
``model/checkpoint.json`` artifact (checkpoints themselves stay in ``storage.root``) and a new
version of the registered model ``tracking.model_name`` (default: the pipeline name) points at
it, with tags naming the pipeline run, the stage run, the checkpoint URI and its sha256. The calls
go through the Tracker, so they wait in the outbox while the store is unreachable.

Reading: a stage input may be ``models:/NAME/VERSION`` (or ``models:/NAME/latest``,
``models:/NAME@ALIAS``) or ``runs:/RUN_ID/OUTPUT`` (a stage run's output); before the stage runs
it is resolved through the tracking store to the checkpoint URI and sha256 it names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from frugalcv.errors import ConfigError
from frugalcv.sharding import storage

TAG = "frugalcv."
MODELS_URI = re.compile(r"models:/([^/@]+)(?:/([^/]+)|@([^/]+))/?")
RUNS_URI = re.compile(r"runs:/([0-9a-zA-Z-]+)/(.+?)/?")
#: model version tags
CHECKPOINT_URI, CHECKPOINT_SHA = f"{TAG}checkpoint.uri", f"{TAG}checkpoint.sha256"
POINTER = "model"


def is_registry_uri(url: str) -> bool:
    """``models:/...`` or ``runs:/...``: an input the tracking store resolves."""
    return url.startswith(("models:/", "runs:/"))


# ------------------------------------------------------------------------------------ reading


def _client(tracking_uri: str):
    from frugalcv.workflows.pipeline.mlflow_store import open_client
    from frugalcv.workflows.pipeline.redact import live_tracking_uri

    return open_client(live_tracking_uri(tracking_uri))


def _model_version(client, name: str, version: str | None, alias: str | None):
    if alias:
        return client.get_model_version_by_alias(name, alias)
    if version == "latest":
        found = client.search_model_versions(f"name = '{name}'")
        if not found:
            raise LookupError(f"registered model {name!r} has no versions")
        return max(found, key=lambda v: int(v.version))
    return client.get_model_version(name, version)


def resolve_registry_uri(url: str, tracking_uri: str, where: str = "input") -> dict[str, str]:
    """``{uri, sha256, source, run_id}`` (+ ``model``, ``version`` for ``models:/``) of ``url``;
    ConfigError naming ``where``, the URI and what to do when it cannot be resolved."""
    from frugalcv.workflows.pipeline.mlflow_ops import http_limits, is_unreachable

    models, runs = MODELS_URI.fullmatch(url), RUNS_URI.fullmatch(url)
    if not models and not runs:
        raise ConfigError(f"{where}: {url!r}: use models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/OUTPUT")
    store = storage.redact(tracking_uri)
    try:
        with http_limits(10, 1):
            client = _client(tracking_uri)
            if models:
                name, version, alias = models.groups()
                mv = _model_version(client, name, version, alias)
                tags, out = dict(mv.tags), {"model": name, "version": str(mv.version), "run_id": mv.run_id or ""}
                uri_key, sha_key = CHECKPOINT_URI, CHECKPOINT_SHA
            else:
                run_id, output = runs.groups()
                tags, out = dict(client.get_run(run_id).data.tags), {"run_id": run_id}
                uri_key, sha_key = f"{TAG}output.{output}.uri", f"{TAG}output.{output}.sha256"
    except Exception as e:
        if is_unreachable(e):
            raise ConfigError(f"{where}: {url}: tracking store {store} is unreachable ({type(e).__name__}); "
                              "start it or set tracking.uri") from None
        raise ConfigError(f"{where}: {url}: not found in tracking store {store} ({str(e).splitlines()[0][:200]}); "
                          "check the name and version (`frugalcv ui` shows the registered models)") from None
    if uri_key not in tags or sha_key not in tags:
        known = sorted(k.split(".")[2] for k in tags if k.startswith(f"{TAG}output.") and k.endswith(".uri"))
        hint = f"its outputs: {', '.join(known)}" if runs else "it was not registered by a frugalcv pipeline"
        raise ConfigError(f"{where}: {url}: names no checkpoint (no {uri_key} tag; {hint})")
    uri, sha = tags[uri_key], tags[sha_key]
    if not storage.exists(uri):
        raise ConfigError(f"{where}: {url} points at {storage.redact(uri)}, which no longer exists")
    return {"uri": uri, "sha256": sha, "source": url, **out}


def resolve_stage_inputs(cfg, stage: str) -> dict[str, dict[str, str]]:
    """The stage's ``models:/`` and ``runs:/`` inputs, resolved: input name → resolve_registry_uri()."""
    st = cfg.stage(stage)
    return {name: resolve_registry_uri(url, cfg.tracking.uri, f"stages.{stage}.inputs.{name}")
            for name, url in st.inputs.items() if is_registry_uri(url)}


def input_tags(resolved: dict[str, dict[str, str]]) -> dict[str, str]:
    """Lineage tags of a stage run for its resolved registry inputs."""
    tags = {}
    for name, ref in resolved.items():
        base = f"{TAG}input.{name}."
        tags.update({base + "source": ref["source"], base + "uri": storage.redact(ref["uri"]),
                     base + "sha256": ref["sha256"], base + "run": ref.get("run_id", "")})
        if ref.get("model"):
            tags[base + "model_version"] = f"{ref['model']}/{ref['version']}"
    return tags


# ------------------------------------------------------------------------------------ registering


def model_stage(cfg) -> tuple[str, str] | None:
    """(stage, output) of the pipeline's final model: the last stage declaring a model output."""
    from frugalcv.workflows.pipeline.stages import stage_info

    for st in reversed(cfg.stages):
        output = stage_info(st.uses).model
        if output:
            return st.name, output
    return None


def register_final_model(cfg, store, tracker, parent: str | None, printer: Callable[[str], None]) -> dict | None:
    """Register the pipeline's final model once per pipeline run (see the module docstring);
    returns ``{name, version, stage, ...}`` as recorded in run.json, or None."""
    meta = store.read_meta()
    if not parent or meta.get("registered_model"):
        return meta.get("registered_model")
    found = model_stage(cfg)
    if found is None:
        return None
    stage, output = found
    rec = store.read(stage)
    if rec is None or rec.state != "finished" or output not in rec.outputs or not rec.mlflow_run_id:
        if rec is not None and rec.state == "cached":
            printer(f"[{stage}] model reused from run {rec.cached_from}; not registered again")
        return None
    ref = rec.outputs[output]
    name = cfg.tracking.model_name or cfg.name
    tags = {f"{TAG}pipeline": cfg.name, f"{TAG}pipeline_run": store.run_id, f"{TAG}pipeline_mlflow_run": parent,
            f"{TAG}stage": stage, f"{TAG}stage_run": rec.mlflow_run_id, f"{TAG}fingerprint": rec.fingerprint,
            CHECKPOINT_URI: storage.redact(ref["uri"]), CHECKPOINT_SHA: ref["sha256"]}
    pointer = {"checkpoint": storage.redact(ref["uri"]), "sha256": ref["sha256"], "pipeline": cfg.name,
               "pipeline_run": store.run_id, "stage": stage, "output": output, "metrics": rec.metrics}
    tracker.log_text(json.dumps(pointer, indent=1, sort_keys=True) + "\n", f"{POINTER}/checkpoint.json",
                     run_id=rec.mlflow_run_id)
    version = tracker.register_model(rec.mlflow_run_id, POINTER, name, tags)
    if version is None and not getattr(tracker, "offline", False):
        printer(f"[{stage}] model not registered: the tracking store refused it (see the warning above)")
        return None
    registered = {"name": name, "version": version, "stage": stage, "sha256": ref["sha256"]}
    store.update_meta(registered_model=registered)
    where = f"version {version}" if version else "queued in the outbox (tracking store unreachable)"
    printer(f"[{stage}] registered model {name} {where} (checkpoint sha256 {ref['sha256'][:12]})")
    return registered
