"""Offline checks of the cluster definitions: `ray up` configs through Ray's own autoscaler validation,
KubeRay manifests for the fields KubeRay requires."""

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


def load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_ray_up_config_passes_ray_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load(CLUSTER / name)
    validate_config(raw)  # the schema as written
    prepared = prepare_config(copy.deepcopy(raw))  # merged with the provider's defaults, as `ray up` does
    validate_config(prepared)

    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert "GPU" not in head["resources"]
    workers = {k: v for k, v in types.items() if k != raw["head_node_type"]}
    assert any(v["resources"].get("GPU") for v in workers.values()), "a GPU worker type"
    assert any(not v["resources"].get("GPU") for v in workers.values()), "a CPU worker type"
    for spec in workers.values():
        assert 0 <= spec["min_workers"] <= spec["max_workers"] <= raw["max_workers"]
    assert raw["idle_timeout_minutes"] > 0
    assert "gpu" in raw["docker"]["image"] and "2.60.0" in raw["docker"]["image"]
    assert any("pip install" in c and "lmstack" in c for c in raw["setup_commands"])
    assert raw["file_mounts"]["~/lmstack"] == "."


def test_validation_rejects_a_broken_config():
    from ray.autoscaler._private.util import validate_config

    raw = load(CLUSTER / "aws.yaml")
    raw["available_node_types"]["worker_gpu"]["min_workers"] = "two"
    with pytest.raises(Exception):  # noqa: B017 - jsonschema.ValidationError
        validate_config(raw)
    raw = load(CLUSTER / "aws.yaml")
    raw["head_node_type"] = "nope"
    with pytest.raises(ValueError):
        validate_config(raw)


def check_pod_template(template):
    containers = template["spec"]["containers"]
    assert containers and all(c.get("name") and c.get("image") for c in containers)


def check_cluster_spec(spec, autoscaling=True):
    assert spec["rayVersion"] == "2.60.0"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    check_pod_template(head["template"])
    ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0].get("ports", [])}
    assert 8265 in ports  # the Job Submission API
    groups = spec["workerGroupSpecs"]
    assert groups and len({g["groupName"] for g in groups}) == len(groups)
    for g in groups:
        assert isinstance(g["rayStartParams"], dict)
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        check_pod_template(g["template"])
    if autoscaling:
        assert spec["enableInTreeAutoscaling"] is True
        assert any(g["maxReplicas"] > g["minReplicas"] for g in groups)


def test_kuberay_raycluster():
    doc = load(CLUSTER / "kuberay" / "raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster" and doc["metadata"]["name"]
    check_cluster_spec(doc["spec"])
    gpu = [g for g in doc["spec"]["workerGroupSpecs"]
           if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu, "a GPU worker group"


def test_kuberay_rayjob_runs_a_recipe_through_jobs_entrypoint():
    doc = load(CLUSTER / "kuberay" / "rayjob.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob" and doc["metadata"]["name"]
    spec = doc["spec"]
    assert "python jobs/run.py train jobs/recipes/" in spec["entrypoint"]
    recipe = spec["entrypoint"].split("jobs/run.py train ")[1].split()[0]
    assert (ROOT / recipe).is_file()
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    assert spec["shutdownAfterJobFinishes"] is True
    check_cluster_spec(spec["rayClusterSpec"])


def test_kuberay_rayservice_embeds_a_serve_config():
    doc = load(CLUSTER / "kuberay" / "rayservice.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayService" and doc["metadata"]["name"]
    spec = doc["spec"]
    assert isinstance(spec["serveConfigV2"], str)  # KubeRay takes the Serve config as a YAML string
    serve = yaml.safe_load(spec["serveConfigV2"])
    apps = serve["applications"]
    assert apps and all(a.get("name") and a.get("import_path") for a in apps)
    check_cluster_spec(spec["rayClusterConfig"])
    local = ROOT / "serving" / "config.yaml"
    if local.is_file():  # the embedded config is serving/config.yaml's, plus a runtime_env
        shipped = {a["name"]: a for a in load(local)["applications"]}
        assert {a["name"] for a in apps} == set(shipped)
        for app in apps:
            want = shipped[app["name"]]
            assert app["import_path"] == want["import_path"] and app.get("args") == want.get("args")
    for group in [spec["rayClusterConfig"]["headGroupSpec"], *spec["rayClusterConfig"]["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        assert {v["name"] for v in pod.get("volumes", [])} >= {m["name"] for m in pod["containers"][0]["volumeMounts"]}
