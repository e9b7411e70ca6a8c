"""video.extract: frames (shards or a folder of frame images) -> per-frame features, on tiny inputs."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from frugalcv.cli import main
from frugalcv.errors import ConfigError, FrugalError, ShardError, SourceLayoutError
from frugalcv.sharding import iter_samples, load_manifest, write_shards
from frugalcv.sharding.decode import decode_image, decode_sample
from frugalcv.sharding.sources import get_source
from frugalcv.sharding.tasks import finish_split, write_split_task
from frugalcv.sharding.writer import write_split
from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import pipeline_from_dict
from frugalcv.workflows.pipeline.schema import build
from frugalcv.workflows.video.extract import feature_source
from frugalcv.workflows.video.frames import open_frames
from frugalcv.workflows.video.params import ExtractParams

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


@pytest.fixture
def frame_folder(tmp_path):
    """3 videos of 4 frames of 16x16 in ``<class>/<video>/<frame>``: PNG and JPEG; a stray file is skipped."""
    rng = np.random.default_rng(0)
    root = tmp_path / "videos"
    written = {}
    for cls, video, ext in (("cat", "a", "png"), ("cat", "b", "jpg"), ("dog", "c", "png")):
        folder = root / cls / video
        folder.mkdir(parents=True)
        frames = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
        for t, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{t:05d}.{ext}", quality=95)
        (folder / "notes.txt").write_text("not a frame")
        if ext == "jpg":  # lossy: the frames are what the files decode to
            frames = np.stack([decode_image((folder / f"{t:05d}.jpg").read_bytes()) for t in range(4)])
        written[f"{cls}_{video}"] = frames
    return root, written


def params(**data) -> ExtractParams:
    return build(ExtractParams, data, "params")


def extract(frames_url: str, out: str, **data):
    source = feature_source(open_frames(frames_url), params(**data))
    return source, write_split(source, out, max_shard_samples=data.get("max_shard_samples"), progress=False)


def test_the_frame_folder_layout_converts_to_video_frames_shards(frame_folder, tmp_path):
    root, written = frame_folder
    assert main(["shard", "video-frames", str(root), str(tmp_path / "shards"), "--no-progress"]) == 0
    assert sorted(os.listdir(tmp_path / "shards")) == ["train"]
    m = load_manifest(str(tmp_path / "shards" / "train"))
    assert (m.kind, m.task, m.classes, m.extra) == ("video-frames", "video_frames", ["cat", "dog"], {"frames": 4})
    samples = list(iter_samples(m.location))
    assert [(s["key"], s["label"], s["frames"].shape) for s in samples] == [
        ("cat_a", 0, (4, 16, 16, 3)), ("cat_b", 0, (4, 16, 16, 3)), ("dog_c", 1, (4, 16, 16, 3))]
    for sample in samples:
        np.testing.assert_array_equal(sample["frames"], written[sample["key"]])
    with Image.open(root / "cat" / "b" / "00000.jpg") as jpeg:
        assert np.abs(np.asarray(jpeg, dtype=int) - samples[1]["frames"][0]).mean() < 1  # as PIL decodes it
    with pytest.raises(SourceLayoutError, match="no train/val/test folders"):
        write_shards("video-frames", str(root), str(tmp_path / "x"), split="val", progress=False)


def test_a_video_file_without_pyav_names_the_file(frame_folder, tmp_path):
    try:
        import av  # noqa: F401
        pytest.skip("PyAV is installed here")
    except ImportError:
        pass
    root, _ = frame_folder
    (root / "dog" / "clip.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(SourceLayoutError, match=r"clip\.mp4.*PyAV.*extract its frames first"):
        write_shards("video-frames", str(root), str(tmp_path / "x"), progress=False)


def test_pixels_features_are_the_resized_normalised_frames(frame_folder, tmp_path):
    root, written = frame_folder
    _, m = extract(str(root), str(tmp_path / "f"), fine={"model": "pixels", "size": 8},
                   coarse={"model": "pixels", "size": 8, "normalize": "none"}, fps_stride=2)
    assert (m.kind, m.task, m.split, m.classes) == ("video-features", "video_features", "train", ["cat", "dog"])
    assert m.extra["frames"] == 2 and m.extra["fine"]["dim"] == m.extra["coarse"]["dim"] == 3 * 8 * 8
    assert m.extra["fine"]["gflops"] == 0.0 and set(m.schema) == {"features.npy", "coarse.npy", "cls"}
    sample = next(iter_samples(m.location))
    frames = torch.from_numpy(written["cat_a"][::2]).permute(0, 3, 1, 2).float() / 255
    small = F.interpolate(frames, size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    np.testing.assert_allclose(sample["coarse"], small.flatten(1).numpy(), atol=1e-6)
    np.testing.assert_allclose(sample["features"], ((small - MEAN) / STD).flatten(1).numpy(), atol=1e-5)
    assert sample["features"].dtype == np.float32 and sample["label"] == 0


def test_mobilenet_features_equal_the_bare_forward_with_torchvision_weights(frame_folder, tmp_path):
    root, written = frame_folder
    torch.manual_seed(3)
    # torchvision's own random initialisation, with a classifier for 7 classes (dropped anyway)
    reference = torchvision.models.mobilenet_v2(weights=None, num_classes=7)
    weights = tmp_path / "mobilenet_v2.pt"
    torch.save(reference.state_dict(), weights)
    reference.classifier = torch.nn.Identity()
    reference.eval()
    _, m = extract(str(root), str(tmp_path / "f"), batch_size=8,  # two videos per forward, then one
                   fine={"model": "mobilenet_v2", "size": 32, "weights": str(weights)})
    assert m.extra["fine"]["dim"] == 1280 and 0.005 < m.extra["fine"]["gflops"] < 0.05
    assert m.extra["fine"]["weights"] == str(weights) and m.extra["coarse"] is None
    for sample in iter_samples(m.location):
        frames = torch.from_numpy(written[sample["key"]]).permute(0, 3, 1, 2).float() / 255
        x = (F.interpolate(frames, size=(32, 32), mode="bilinear", align_corners=False, antialias=True) - MEAN) / STD
        with torch.no_grad():
            expected = reference(x).numpy()
        assert sample["features"].shape == (4, 1280)
        np.testing.assert_allclose(sample["features"], expected, rtol=1e-4, atol=1e-5)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=r"other\.pt: .* not in the file"):
        extract(str(root), str(tmp_path / "g"), fine={"model": "mobilenet_v2", "size": 32,
                                                       "weights": str(tmp_path / "other.pt")})


class FirstVideos:
    """The first ``n`` videos of a source (a tiny video_frames split)."""

    def __init__(self, source, n):
        self.source, self.n = source, n
        self.kind, self.task, self.split = source.kind, source.task, source.split

    def __len__(self):
        return self.n

    def __getattr__(self, name):
        return getattr(self.source, name)


def test_video_digits_shards_pass_informative_through(tmp_path):
    m = write_split(FirstVideos(get_source("video-digits", "sklearn", "val"), 2), str(tmp_path / "frames"),
                    progress=False)
    _, out = extract(m.location, str(tmp_path / "f"), fine={"model": "pixels", "size": 16}, fps_stride=4)
    sample = next(iter_samples(out.location))
    original = next(iter_samples(m.location))
    assert out.split == "val" and out.extra["frames"] == 4 and sample["features"].shape == (4, 3 * 16 * 16)
    np.testing.assert_array_equal(sample["informative"], original["informative"][::4])
    assert sample["key"] == original["key"] == "val_0000" and "informative.npy" in out.schema


def test_a_registered_model_gives_its_forward_as_features(frame_folder, tmp_path):
    root, _ = frame_folder
    _, m = extract(str(root), str(tmp_path / "f"), fine={"model": "cifar_resnet32", "size": 32,
                                                         "args": {"debug": True}})
    sample = next(iter_samples(m.location))
    assert sample["features"].shape == (4, m.extra["fine"]["dim"]) and m.extra["fine"]["gflops"] > 0


def test_array_tasks_write_the_same_shards_and_a_rerun_only_the_missing_ones(frame_folder, tmp_path):
    root, _ = frame_folder
    p = params(fine={"model": "mobilenet_v2", "size": 32}, coarse={"model": "pixels", "size": 8},
               batch_size=8, max_shard_samples=2)
    one = write_split(feature_source(open_frames(str(root)), p), str(tmp_path / "one"), max_shard_samples=2,
                      progress=False)
    out, tasks = str(tmp_path / "two"), feature_source(open_frames(str(root)), p)  # random weights from the seed
    assert [(r.written, r.skipped) for r in (write_split_task(tasks, out, t, 2, max_shard_samples=2)
                                             for t in (0, 1))] == [(1, 0), (1, 0)]
    os.remove(os.path.join(out, "train-000001.tar"))
    assert [(r.written, r.skipped) for r in (write_split_task(tasks, out, t, 2, max_shard_samples=2)
                                             for t in (0, 1))] == [(0, 1), (1, 0)]
    two = finish_split(tasks, out, max_shard_samples=2)
    assert [s.sha256 for s in two.shards] == [s.sha256 for s in one.shards] and two.extra == one.extra
    other = params(fine={"model": "pixels", "size": 8}, max_shard_samples=2)
    with pytest.raises(FrugalError, match="a complete dataset with other settings"):
        write_split(feature_source(open_frames(str(root)), other), str(tmp_path / "one"), max_shard_samples=2,
                    progress=False)


def test_coarse_features_decode_and_are_checked():
    fields = {"features.npy": npy(np.zeros((3, 4), np.float32)), "coarse.npy": npy(np.ones((3, 2), np.float32)),
              "cls": b"1"}
    sample = decode_sample("v", fields, "s.tar")
    assert sample["coarse"].shape == (3, 2) and sample["coarse"].dtype == np.float32
    with pytest.raises(ShardError, match=r"v\.coarse\.npy failed to decode.*float32 \[T, D\]"):
        decode_sample("v", {**fields, "coarse.npy": npy(np.ones((3, 2), np.float64))}, "s.tar")
    with pytest.raises(ShardError, match=r"v\.coarse\.npy has 2 rows for 3 frames"):
        decode_sample("v", {**fields, "coarse.npy": npy(np.ones((2, 2), np.float32))}, "s.tar")


def pipeline(root, stages):
    return pipeline_from_dict({"name": "video", "storage": {"root": str(root)}, "stages": stages})


def extract_stage(frames: str, **data):
    return {"name": "features", "uses": "video.extract", "inputs": {"frames": frames},
            "params": {"fine": {"model": "pixels", "size": 16}, "coarse": {"model": "pixels", "size": 8}, **data}}


@pytest.mark.parametrize("spec,match", [
    ({"model": "resnet7", "size": 32}, r"stages\.features\.params\.fine\.model: unknown model 'resnet7'"),
    ({"model": "resnet18", "size": 4}, r"stages\.features\.params\.fine\.size: 4"),
])
def test_bad_backbone_params_are_refused_naming_the_field(tmp_path, spec, match):
    cfg = pipeline(tmp_path, [{**extract_stage(str(tmp_path)), "params": {"fine": spec}}])
    with pytest.raises(ConfigError, match=match):
        runner.run_pipeline(cfg, "inline", track=False)


def test_the_stage_in_a_pipeline_after_the_shard_stage(tmp_path):
    cfg = pipeline(tmp_path, [
        {"name": "data", "uses": "shard", "params": {"kind": "video-digits", "src": "sklearn", "splits": ["val"],
                                                     "max_shard_samples": 150}},
        extract_stage("${stages.data.outputs.val}", max_shard_samples=100)])
    st = runner.status(runner.run_pipeline(cfg, "inline", track=False, printer=lambda _: None), str(tmp_path))
    stage = st["stages"][1]
    assert stage["state"] == "finished"
    assert {k: stage["metrics"][k] for k in ("videos", "shards", "fine_dim", "coarse_dim")} == \
        {"videos": 300.0, "shards": 3.0, "fine_dim": 768.0, "coarse_dim": 192.0}
    m = load_manifest(stage["outputs"]["features"]["uri"])
    assert (m.kind, m.task, m.split, m.extra["frames"]) == ("video-features", "video_features", "val", 16)
    sample = next(iter_samples(m.location))
    assert sample["features"].shape == (16, 768) and sample["coarse"].shape == (16, 192)
    assert sample["informative"].shape == (16,)


def test_the_stage_runs_as_array_tasks_on_a_frame_folder(frame_folder, tmp_path):
    root, _ = frame_folder
    digests = []
    for tasks in (1, 2):
        cfg = pipeline(tmp_path / f"run{tasks}", [extract_stage(str(root), tasks=tasks, max_shard_samples=1)])
        st = runner.status(runner.run_pipeline(cfg, "inline", track=False, printer=lambda _: None),
                           str(tmp_path / f"run{tasks}"))
        assert st["stages"][0]["state"] == "finished" and st["stages"][0]["metrics"]["videos"] == 3.0
        digests.append([s.sha256 for s in load_manifest(st["stages"][0]["outputs"]["features"]["uri"]).shards])
    assert digests[0] == digests[1] and len(digests[0]) == 3
