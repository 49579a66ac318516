"""Training controls of issue 5: locks, corrupt checkpoints, load_train, plateau, devices."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from deepspeech_core.model.checkpoints import load_model
from deepspeech_core.train.devices import DeviceError, preflight
from deepspeech_core.train.loop import train
from deepspeech_core.train.state import CheckpointStateError
from deepspeech_core.workdir.locking import LockedError, training_lock
from tests.helpers import tensorboard_scalars


def test_a_second_training_is_refused_while_the_first_lives(tmp_path):
    with training_lock(tmp_path):
        holder = json.loads((tmp_path / "train.lock").read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            with training_lock(tmp_path):
                pass
    assert not (tmp_path / "train.lock").exists()


def test_a_stale_lock_from_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / "train.lock").write_text(
        json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0})
    )
    with training_lock(tmp_path):
        assert json.loads((tmp_path / "train.lock").read_text())["pid"] == os.getpid()


def test_train_holds_the_lock(trained):
    cfg, _, features, _ = trained
    with training_lock(cfg.checkpoint_dir):
        with pytest.raises(LockedError, match="is in use by another training"):
            train(features, cfg.model, cfg.features, cfg.training, cfg.checkpoint_dir)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(trained, tmp_path, caplog):
    import shutil

    cfg, _, features, result = trained
    ckpt = tmp_path / "ckpt"
    shutil.copytree(cfg.checkpoint_dir, ckpt)
    newest = sorted((ckpt / "train").glob("ckpt-*.data-*"), key=lambda p: p.stat().st_mtime)[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as by a full disk
    more = cfg.training.model_copy(update={"epochs": 3})
    with caplog.at_level("WARNING"):
        resumed = train(features, cfg.model, cfg.features, more, ckpt)
    assert "unusable" in caplog.text
    assert 0 < resumed.resumed_from_step < result.steps
    assert resumed.epochs == 3


def test_load_train_modes(trained, tmp_path):
    cfg, _, features, result = trained
    init = cfg.training.model_copy(update={"load_train": "init"})
    with pytest.raises(CheckpointStateError, match="already holds checkpoints"):
        train(features, cfg.model, cfg.features, init, cfg.checkpoint_dir)
    best = cfg.training.model_copy(update={"load_train": "best"})
    with pytest.raises(CheckpointStateError, match="no such checkpoint"):
        train(features, cfg.model, cfg.features, best, tmp_path / "empty")
    again = train(features, cfg.model, cfg.features, best, cfg.checkpoint_dir)
    assert again.resumed_from_step == int(str(result.best_checkpoint).rsplit("-", 1)[1])


def test_plateau_and_early_stop_state_survive_a_restart(trained, tmp_path):
    cfg, _, features, _ = trained
    # es_min_delta so large that no epoch counts as an improvement
    rules = cfg.training.model_copy(
        update={
            "epochs": 6,
            "reduce_lr_on_plateau": True,
            "plateau_epochs": 2,
            "plateau_reduction": 0.5,
            "early_stop": True,
            "es_epochs": 4,
            "es_min_delta": 1e9,
        }
    )
    first = rules.model_copy(update={"epochs": 3})
    train(features, cfg.model, cfg.features, first, tmp_path / "ck")
    result = train(features, cfg.model, cfg.features, rules, tmp_path / "ck")
    # epoch 0 sets the baseline; epochs 1-4 do not improve on it: stop after epoch 4
    assert result.epochs == 5, "early stop after 4 epochs without improvement, across restarts"
    again = train(features, cfg.model, cfg.features, rules, tmp_path / "ck")
    assert again.epochs == 5, "a stopped run stays stopped"
    assert again.steps == result.steps, "a stopped run stays stopped"
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(result.last_checkpoint))
    names = [n for n, _ in tf.train.list_variables(str(result.last_checkpoint))]
    lr_name = next(n for n in names if "learning_rate" in n)
    # plateau cuts after epochs 2 and 4: 0.001 * 0.5 * 0.5
    assert reader.get_tensor(lr_name) == pytest.approx(cfg.training.learning_rate * 0.25)


def test_tensorboard_summaries_are_written(trained, tmp_path):
    """What TensorBoard will chart: read back, step by step, against the training's own log."""
    cfg, _, features, _ = trained
    # train/loss is written every 10 steps: 16 steps of batch 2 (a tiny model, seconds)
    training = cfg.training.model_copy(update={"epochs": 1, "train_batch_size": 2})
    result = train(features, cfg.model, cfg.features, training, tmp_path / "ckpt")

    scalars = tensorboard_scalars(tmp_path / "tensorboard")

    assert result.steps >= 10, "too few steps for a train/loss summary"
    assert [step for step, _ in scalars["train/loss"]] == list(range(10, result.steps + 1, 10))
    assert all(np.isfinite(loss) and loss > 0 for _, loss in scalars["train/loss"])
    assert [step for step, _ in scalars["train/learning_rate"]] == [10]
    assert scalars["train/learning_rate"][0][1] == pytest.approx(training.learning_rate)
    dev = [loss for _, loss in scalars["epoch/dev_loss"]]
    assert dev == pytest.approx(result.dev_loss_history, rel=1e-5)


def test_preflight_reports_and_require_gpu_fails_fast():
    report = preflight(require_gpu=False)
    assert report.cpus
    assert "TensorFlow" in report.describe()
    if not report.gpus:
        with pytest.raises(DeviceError, match="no GPU"):
            preflight(require_gpu=True)


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
from deepspeech_core.config import FeatureConfig, ModelConfig, TrainingConfig
from deepspeech_core.manifests import FeatureCacheManifest
from deepspeech_core.train.loop import train

if __name__ == "__main__":
    manifest = FeatureCacheManifest.model_validate_json(Path(sys.argv[1]).read_text())
    cfg = TrainingConfig.model_validate_json(Path(sys.argv[2]).read_text())
    kill_at = int(sys.argv[4])

    def progress(p):
        if p.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    train(manifest, ModelConfig(n_hidden=32), FeatureConfig(), cfg, Path(sys.argv[3]),
          on_progress=progress if kill_at else None)
"""


def _subprocess_command(tmp_path, features, training, script_text: str) -> list[str]:
    """python SCRIPT FEATURES.json TRAINING.json: a training run in a fresh process."""
    (tmp_path / "features.json").write_text(features.model_dump_json())
    (tmp_path / "training.json").write_text(training.model_dump_json())
    script = tmp_path / "script.py"
    script.write_text(script_text)
    return [
        sys.executable,
        str(script),
        str(tmp_path / "features.json"),
        str(tmp_path / "training.json"),
    ]


REPO = os.path.dirname(os.path.dirname(__file__))


def test_sigkill_between_checkpoints_then_resume_gives_identical_weights(trained, tmp_path):
    """Deterministic ops + seed: killed-and-resumed == never interrupted, bit for bit."""
    cfg, _, features, _ = trained
    training = cfg.training.model_copy(update={"deterministic": True, "checkpoint_steps": 2})
    command = _subprocess_command(tmp_path, features, training, KILL_SCRIPT)
    # After step 5, between the checkpoints of steps 4 and 6 and in the second epoch: the
    # resume must redo step 5 from step 4's checkpoint, mid-epoch (the same point each run).
    kill_at = 5

    def run(ckpt, kill):
        return subprocess.run(
            [*command, str(ckpt), str(kill)], cwd=REPO, capture_output=True, text=True
        )

    killed = run(tmp_path / "killed", kill_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    state = (tmp_path / "killed" / "train" / "checkpoint").read_text()
    assert 'model_checkpoint_path: "ckpt-4"' in state, "the newest checkpoint is step 4's"
    resumed = run(tmp_path / "killed", 0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    clean = run(tmp_path / "clean", 0)
    assert clean.returncode == 0, clean.stderr[-2000:]
    a, _, _ = load_model(tmp_path / "killed", "last")
    b, _, _ = load_model(tmp_path / "clean", "last")
    for va, vb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(
            va.numpy(), vb.numpy(), err_msg=f"{va.path} (kill at {kill_at})"
        )


def test_mixed_precision_converges_like_fp32(trained, tmp_path):
    cfg, _, features, fp32 = trained
    amp = cfg.training.model_copy(update={"automatic_mixed_precision": True})
    result = train(features, cfg.model, cfg.features, amp, tmp_path / "amp")
    model, _, _ = load_model(tmp_path / "amp", "last")
    assert all(v.dtype == "float32" for v in model.weights), "variables stay float32"
    assert result.train_loss_history[-1] == pytest.approx(fp32.train_loss_history[-1], rel=0.1)
    assert result.dev_loss_history[-1] == pytest.approx(fp32.dev_loss_history[-1], rel=0.1)


def test_loss_scaled_step_matches_plain_adam():
    """The float16 path's LossScaleOptimizer: grads of the scaled loss, unscaled again."""
    import tensorflow as tf

    from deepspeech_core.config import FeatureConfig, ModelConfig, TrainingConfig
    from deepspeech_core.features.batches import Batch
    from deepspeech_core.model.network import create_model
    from deepspeech_core.train.loop import make_optimizer, make_train_step

    rng = np.random.default_rng(0)
    batch = Batch(
        tf.constant(rng.normal(size=(2, 40, 26)), tf.float32),
        tf.constant([40, 30], tf.int32),
        tf.constant([[1, 2, 3], [2, 2, 0]], tf.int32),
        tf.constant([3, 2], tf.int32),
    )
    results = []
    for scaling in (False, True):
        model = create_model(ModelConfig(n_hidden=16, dropout_rate=0), FeatureConfig(), 5, seed=1)
        opt = make_optimizer(TrainingConfig(), loss_scaling=scaling)
        opt.build(model.trainable_variables)
        step = make_train_step(model, opt, 26)
        results.append([float(step(batch)[0]) for _ in range(5)])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-4)


def test_transfer_learning_to_a_new_alphabet(trained, tmp_path):
    from deepspeech_core.data.alphabet import Alphabet
    from deepspeech_core.model.checkpoints import CheckpointError

    cfg, _, features, _ = trained
    source = Alphabet.load(features.alphabet_path)
    bigger = Alphabet([*source.characters, "0", "1"])  # a new language's extra letters
    bigger.save(tmp_path / "alphabet.txt")
    new_features = features.model_copy(update={"alphabet_path": tmp_path / "alphabet.txt"})
    no_drop = cfg.training.model_copy(
        update={"epochs": 0, "load_checkpoint_dir": cfg.checkpoint_dir, "drop_source_layers": 0}
    )
    with pytest.raises(CheckpointError, match="drop_source_layers"):
        train(new_features, cfg.model, cfg.features, no_drop, tmp_path / "refused")
    drop_one = no_drop.model_copy(update={"drop_source_layers": 1})
    train(new_features, cfg.model, cfg.features, drop_one, tmp_path / "transfer")
    target, spec, _ = load_model(tmp_path / "transfer", "last")
    src, _, _ = load_model(cfg.checkpoint_dir, "best")
    assert spec.alphabet == bigger
    assert target.output_shape[-1] == len(bigger) + 1
    for name in ("layer_1", "layer_2", "layer_3", "lstm", "layer_5"):
        for a, b in zip(
            target.get_layer(name).get_weights(), src.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(a, b)


MIRRORED_SCRIPT = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from pathlib import Path
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from deepspeech_core.config import FeatureConfig, ModelConfig, TrainingConfig
from deepspeech_core.manifests import FeatureCacheManifest
from deepspeech_core.train.loop import train

if __name__ == "__main__":
    manifest = FeatureCacheManifest.model_validate_json(Path(sys.argv[1]).read_text())
    cfg = TrainingConfig.model_validate_json(Path(sys.argv[2]).read_text())
    out = {}
    for mode in ("none", "mirrored"):
        result = train(manifest, ModelConfig(n_hidden=32, dropout_rate=0), FeatureConfig(),
                       cfg.model_copy(update={"distribute": mode}), Path(sys.argv[3]) / mode)
        out[mode] = {"train": result.train_loss_history, "dev": result.dev_loss_history}
    print("RESULT " + json.dumps(out))
"""


def test_mirrored_strategy_on_two_logical_devices_matches_one_device(trained, tmp_path):
    cfg, _, features, _ = trained
    command = _subprocess_command(tmp_path, features, cfg.training, MIRRORED_SCRIPT)
    run = subprocess.run([*command, str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "training on 2 replicas" in run.stderr
    out = json.loads(run.stdout.split("RESULT ", 1)[1])
    np.testing.assert_allclose(out["mirrored"]["train"], out["none"]["train"], rtol=1e-3)
    np.testing.assert_allclose(out["mirrored"]["dev"], out["none"]["dev"], rtol=1e-3)


MULTI_WORKER_SCRIPT = """
import json, logging, os, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO)
os.environ["TF_CONFIG"] = sys.argv[4]
from deepspeech_core.config import FeatureConfig, ModelConfig, TrainingConfig
from deepspeech_core.manifests import FeatureCacheManifest
from deepspeech_core.train.loop import train

if __name__ == "__main__":
    manifest = FeatureCacheManifest.model_validate_json(Path(sys.argv[1]).read_text())
    cfg = TrainingConfig.model_validate_json(Path(sys.argv[2]).read_text())
    result = train(manifest, ModelConfig(n_hidden=32, dropout_rate=0), FeatureConfig(),
                   cfg.model_copy(update={"distribute": "multi_worker"}), Path(sys.argv[3]))
    losses = {"train": result.train_loss_history, "dev": result.dev_loss_history}
    print("RESULT " + json.dumps(losses))
"""


def _free_port() -> int:
    import socket as sock

    with sock.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_worker_strategy_with_two_local_workers(trained, tmp_path):
    """Two worker processes on 127.0.0.1 train one model: same losses as one process."""
    from deepspeech_core.config import ModelConfig

    cfg, _, features, _ = trained
    command = _subprocess_command(tmp_path, features, cfg.training, MULTI_WORKER_SCRIPT)
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    procs = []
    for index in range(2):
        tf_config = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        procs.append(
            subprocess.Popen(
                [*command, str(tmp_path / "ckpt"), tf_config],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        finished = [proc.communicate(timeout=300) for proc in procs]
    finally:  # a worker left waiting for its peer must not outlive the test
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    outputs = []
    for proc, (out, err) in zip(procs, finished, strict=True):
        assert proc.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.split("RESULT ", 1)[1]))
    assert (tmp_path / "ckpt" / "train" / "checkpoint").is_file(), "the chief wrote checkpoints"
    assert (tmp_path / "ckpt" / ".worker-1").is_dir(), "the other worker wrote its own copy"
    single = train(
        features,
        ModelConfig(n_hidden=32, dropout_rate=0),
        cfg.features,
        cfg.training.model_copy(update={"distribute": "none"}),
        tmp_path / "single",
    )
    for out in outputs:
        np.testing.assert_allclose(out["train"], single.train_loss_history, rtol=1e-3)
        np.testing.assert_allclose(out["dev"], single.dev_loss_history, rtol=1e-3)


def test_checkpoints_every_n_seconds(trained, tmp_path):
    import time

    cfg, _, features, _ = trained
    by_time = cfg.training.model_copy(
        update={"checkpoint_steps": 10_000, "checkpoint_secs": 1, "max_to_keep": 10}
    )
    train(
        features,
        cfg.model,
        cfg.features,
        by_time,
        tmp_path / "ck",
        on_progress=lambda p: time.sleep(0.4),
    )
    steps = sorted(
        int(p.name.split("-")[1].split(".")[0])
        for p in (tmp_path / "ck" / "train").glob("ckpt-*.index")
    )
    assert set(steps) - {4, 8}, f"a checkpoint between epoch ends, by time: {steps}"


def test_gpu_visible_but_model_on_cpu_warns(caplog):
    from deepspeech_core.train.devices import DeviceReport, warn_if_model_on_cpu

    class Var:
        device = "/job:localhost/replica:0/task:0/device:CPU:0"

    report = DeviceReport(
        gpus=["/physical_device:GPU:0"], cpus=["/physical_device:CPU:0"], memory_growth=True
    )
    with caplog.at_level("WARNING"):
        assert warn_if_model_on_cpu(report, [Var()])
    assert "trains on the CPU" in caplog.text
    Var.device = "/job:localhost/replica:0/task:0/device:GPU:0"
    assert not warn_if_model_on_cpu(report, [Var()])
    assert not warn_if_model_on_cpu(DeviceReport([], ["cpu"], False), [Var()])
