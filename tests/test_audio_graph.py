"""The exported ONNX audio graph (export/audio_graph.py) against the torch reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edge_runtime.encoder_chunks import chunk_mel, chunked_token_count
from edge_runtime.model_facts import audio_token_count
from edge_moss_export.audio_graph import export_audio_graph
from edge_moss_export.reference import MossAudioReference

torch.set_num_threads(1)

CLIP_FRAMES = [1, 7, 399, 400, 401, 799, 950]
TOL = 1e-5  # max |onnx - torch| / max |torch|; measured 1.8e-6 at most (tiny and small)


def session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def graph_inputs(mel: np.ndarray, mode: str) -> dict[str, np.ndarray]:
    if mode == "full":
        batch, last = mel[None], mel.shape[1]
    else:
        batch, last = chunk_mel(mel)
    return {"mel": np.ascontiguousarray(batch, dtype=np.float32), "last_frames": np.array(last, np.int64)}


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def random_mel(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((128, frames)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_graph(tiny_checkpoint, tmp_path_factory):
    path = export_audio_graph(tiny_checkpoint, tmp_path_factory.mktemp("graph") / "audio.onnx")
    return path, session(path), MossAudioReference.from_checkpoint(tiny_checkpoint)


def test_graph_files_and_signature(tiny_graph):
    path, sess, _ = tiny_graph
    assert path.is_file() and path.with_name("audio.onnx.data").is_file()
    model = onnx.load(str(path), load_external_data=False)
    assert model.opset_import[0].version >= 17
    # Weights live in the external data file, not inline.
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    ins = {i.name: i for i in sess.get_inputs()}
    outs = {o.name: o for o in sess.get_outputs()}
    assert set(ins) == {"mel", "last_frames"} and set(outs) == {"audio_embeds", "deepstack_embeds"}
    assert ins["mel"].type == "tensor(float)" and ins["last_frames"].type == "tensor(int64)"
    assert ins["mel"].shape[1] == 128 and isinstance(ins["mel"].shape[0], str) and isinstance(ins["mel"].shape[2], str)
    assert ins["last_frames"].shape == []
    assert outs["audio_embeds"].type == "tensor(float)" and outs["deepstack_embeds"].type == "tensor(float)"


@pytest.mark.parametrize("mode", ["full", "chunked"])
@pytest.mark.parametrize("frames", CLIP_FRAMES)
def test_tiny_graph_matches_reference(tiny_graph, frames, mode):
    _, sess, ref = tiny_graph
    mel = random_mel(frames, seed=frames)
    audio, deepstack = sess.run(None, graph_inputs(mel, mode))
    ref_audio, ref_deepstack = (t.numpy() for t in ref.encode_audio(mel, mode))
    n = audio_token_count(frames) if mode == "full" else chunked_token_count(frames)
    assert audio.shape == (n, 64) and deepstack.shape == (3, n, 64)
    assert rel_err(audio, ref_audio) <= TOL
    assert rel_err(deepstack, ref_deepstack) <= TOL


@pytest.mark.parametrize("last", [1, 2, 8, 9, 250, 400])
def test_any_last_chunk_length(tiny_graph, last):
    # Two chunks, the second of `last` true frames (padded to 400 in the batch).
    _, sess, ref = tiny_graph
    mel = random_mel(400 + last, seed=last)
    feeds = graph_inputs(mel, "chunked")
    assert feeds["mel"].shape == (2, 128, 400) and int(feeds["last_frames"]) == last
    audio, deepstack = sess.run(None, feeds)
    ref_audio, ref_deepstack = (t.numpy() for t in ref.encode_audio(mel, "chunked"))
    assert audio.shape[0] == 50 + audio_token_count(last)
    assert rel_err(audio, ref_audio) <= TOL and rel_err(deepstack, ref_deepstack) <= TOL


def test_padding_of_last_chunk_is_masked(tiny_graph):
    # Values in the padded tail of the last chunk must not reach any kept token. Frames from 240
    # on lie outside the conv receptive field (+-7 frames) of the 25 valid tokens of a 200-frame
    # chunk, so only attention could carry them in -- and the key mask stops it.
    _, sess, _ = tiny_graph
    feeds = graph_inputs(random_mel(600, seed=1), "chunked")
    assert int(feeds["last_frames"]) == 200
    clean = sess.run(None, feeds)
    feeds["mel"] = feeds["mel"].copy()
    feeds["mel"][-1, :, 240:] = 5.0
    noisy = sess.run(None, feeds)
    assert noisy[0].shape == clean[0].shape == (75, 64)
    np.testing.assert_allclose(noisy[0], clean[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(noisy[1], clean[1], rtol=0, atol=1e-5)


def test_small_graph_matches_reference(small_checkpoint, tmp_path):
    path = export_audio_graph(small_checkpoint, tmp_path / "audio.onnx")
    sess = session(path)
    ref = MossAudioReference.from_checkpoint(small_checkpoint)
    mel = random_mel(950, seed=2)
    for mode in ("chunked", "full"):
        audio, deepstack = sess.run(None, graph_inputs(mel, mode))
        ref_audio, ref_deepstack = (t.numpy() for t in ref.encode_audio(mel, mode))
        assert audio.shape == ref_audio.shape == (119, 256)
        assert rel_err(audio, ref_audio) <= TOL and rel_err(deepstack, ref_deepstack) <= TOL


def test_fp16_graph_keeps_float32_io(tiny_checkpoint, tiny_graph, tmp_path):
    _, _, ref = tiny_graph
    path = export_audio_graph(tiny_checkpoint, tmp_path / "audio16.onnx", dtype="fp16")
    model = onnx.load(str(path), load_external_data=False)
    weights = [t for t in model.graph.initializer if len(t.dims) == 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    sess = session(path)
    assert sess.get_inputs()[0].type == "tensor(float)" and sess.get_outputs()[0].type == "tensor(float)"
    mel = random_mel(950, seed=3)
    audio, deepstack = sess.run(None, graph_inputs(mel, "chunked"))
    ref_audio, ref_deepstack = (t.numpy() for t in ref.encode_audio(mel, "chunked"))
    assert audio.dtype == np.float32 and audio.shape == ref_audio.shape
    assert rel_err(audio, ref_audio) <= 5e-3 and rel_err(deepstack, ref_deepstack) <= 5e-3  # measured 7.3e-4


def test_export_cache_is_keyed_by_content(tiny_checkpoint, tmp_path, monkeypatch):
    # The session's export cache (conftest.export_cache) may only hand back the graph of the
    # same tensors and precision, under any file name, with the same numbers.
    from onnx import TensorProto, helper, numpy_helper

    from edge_moss_export.audio_graph import _GraphCache
    from edge_moss_export.checkpoint import open_checkpoint
    from edge_moss_export.fixture import write_fixture

    monkeypatch.setenv(_GraphCache.ENV, str(tmp_path / "cache"))
    ckpt = open_checkpoint(tiny_checkpoint)
    entry = _GraphCache.from_env(ckpt, "fp32")
    assert entry.folder == _GraphCache.from_env(open_checkpoint(tiny_checkpoint), "fp32").folder
    assert entry.folder != _GraphCache.from_env(ckpt, "fp16").folder
    write_fixture(tmp_path / "other", size="tiny", seed=1)
    assert entry.folder != _GraphCache.from_env(open_checkpoint(tmp_path / "other"), "fp32").folder

    weight = np.arange(12, dtype=np.float32).reshape(3, 4)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(weight, "w")])
    made = tmp_path / "made" / "audio.fp32.onnx"
    made.parent.mkdir()
    onnx.save(helper.make_model(graph), str(made), save_as_external_data=True,
              location="audio.fp32.onnx.data", size_threshold=0)
    target = tmp_path / "bundle" / "audio.onnx"
    target.parent.mkdir()
    assert not entry.restore(target)
    entry.store(made)
    assert entry.restore(target) and target.with_name("audio.onnx.data").is_file()
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(session(target).run(None, {"x": x})[0], x @ weight)
