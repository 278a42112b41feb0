"""Compiled training: one graph per model (no graph break), compiled in the first epoch and never
again (no recompile at later epochs, after evaluation switched the model to eval mode and back),
and `compile=None` deciding from the run's length."""
import pytest
import torch

from attnlab.data import load_dataset
from attnlab.train import Trainer
from attnlab.train.config import TrainConfig
from attnlab.train.trainer import COMPILE_MIN_STEPS


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _config(**kw):
    base = dict(model="resnet_cifar", model_kwargs={"depth": 8, "width": 16}, dataset="digits", epochs=3,
                batch_size=128, threads=1)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("attention", [None, "se", "eca", "cbam", "gc", "non_local", "stn"])
def test_compiled_training_is_one_graph_compiled_once(digits, monkeypatch, attention):
    graphs = []
    real_compile = torch.compile

    def counting_compile(model, **kwargs):
        def backend(graph_module, example_inputs):
            graphs.append(trainer.epoch)           # the epoch in which dynamo handed over a graph
            return graph_module.forward            # run it eagerly: only the tracing is under test
        return real_compile(model, backend=backend)

    monkeypatch.setattr(torch, "compile", counting_compile)
    kwargs = {"reduction": 4} if attention in ("se", "cbam", "gc") else {}
    trainer = Trainer(_config(attention=attention, attention_kwargs=kwargs, compile=True), None, progress=False,
                      data=digits)
    result = trainer.fit()
    torch._dynamo.reset()
    assert result["compile"] is True
    assert graphs == [0], f"graphs compiled per epoch: {graphs} (more than one in epoch 0 = a graph break)"


def test_auto_compiles_long_runs_only(digits):
    short = Trainer(_config(epochs=1), None, progress=False, data=digits)
    assert short.compiled is False and "too short" in short.compile_reason
    epochs = -(-COMPILE_MIN_STEPS // short.steps_per_epoch)
    long = Trainer(_config(epochs=epochs), None, progress=False, data=digits)
    assert long.compiled is True and "repay" in long.compile_reason
    forced = Trainer(_config(epochs=epochs, compile=False), None, progress=False, data=digits)
    assert forced.compiled is False


def test_auto_falls_back_to_eager_when_the_compiler_fails(digits, monkeypatch):
    from torch._dynamo.exc import BackendCompilerFailed

    real_compile = torch.compile

    def failing_compile(model, **kwargs):
        def backend(graph_module, example_inputs):
            raise RuntimeError("no C++ compiler")
        return real_compile(model, backend=backend)

    monkeypatch.setattr(torch, "compile", failing_compile)
    trainer = Trainer(_config(epochs=1), None, progress=False, data=digits)
    trainer.compiled, trainer.compile_reason = True, "auto: forced for the test"
    trainer.forward_model = torch.compile(trainer.forward_model)
    with pytest.warns(UserWarning, match="trained eagerly"):
        result = trainer.fit()
    torch._dynamo.reset()
    assert result["compile"] is False and result["test_acc"] > 0
    explicit = Trainer(_config(epochs=1, compile=True), None, progress=False, data=digits)
    with pytest.raises(BackendCompilerFailed):
        explicit.fit()
    torch._dynamo.reset()
