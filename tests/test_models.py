"""Model files, the registry and downloads, and the two ResNet50 backbones."""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile

import h5py
import numpy as np
import pytest
from conftest import LABELS, SHARED

import fer8
from fer8.errors import ChecksumMismatchError, ModelFormatError, ModelNotFoundError
from fer8.models.modelfile import ModelSpec, read_graph, read_spec
from fer8.models.preprocessing import IMAGENET_CAFFE, VGGFACE2
from fer8.models.registry import RegisteredModel, cache_dir, resolve_model
from fer8.models.runtime import OnnxNetwork
from fer8.training.backbones import (
    BACKBONES,
    build_backbone,
    build_classifier,
    load_keras2_weights,
    vggface_resnet50,
)
from fer8.training.keras_models import (
    keras_expression_model,
    load_keras_model,
    save_model,
)


@pytest.fixture(autouse=True)
def release_networks():
    """Each test's ResNet50s (95 MB of weights each, and their graphs) go when it ends."""
    yield
    import sys

    if "keras" in sys.modules:  # only the slow tests build networks
        sys.modules["keras"].backend.clear_session()


def crops(n: int = 3, size: int = 48) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


# --- the model file ---------------------------------------------------------------------


def test_model_file_carries_its_spec(tiny_model_path, tiny_model):
    spec = read_spec(tiny_model_path)
    assert spec.labels == LABELS and spec.input_size == 48 and spec.backbone == "test-cnn"
    assert spec.preprocessing == IMAGENET_CAFFE and spec.metadata == {"purpose": "tests"}
    with zipfile.ZipFile(tiny_model_path) as archive:
        stored = json.loads(archive.read("fer8.json"))
    assert stored["format"] == "fer8-model" and stored["fer8_version"] == fer8.__version__
    assert tiny_model.labels == LABELS


def test_classify_gives_probabilities_in_label_order(tiny_model):
    probabilities = fer8.classify(crops(5), tiny_model, batch_size=2)
    assert probabilities.shape == (5, len(LABELS)) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # The same crops one by one give the same rows: batching does not change results.
    single = np.concatenate([fer8.classify(c[None], tiny_model) for c in crops(5)])
    np.testing.assert_allclose(probabilities, single, atol=1e-5)
    assert fer8.classify([], tiny_model).shape == (0, len(LABELS))


def test_flip_averages_each_face_with_its_mirror_image(tiny_model):
    faces = crops(3)
    mirrored = np.ascontiguousarray(faces[:, :, ::-1])
    averaged = fer8.classify(faces, tiny_model, flip=True, batch_size=2)
    expected = (fer8.classify(faces, tiny_model) + fer8.classify(mirrored, tiny_model)) / 2
    np.testing.assert_allclose(averaged, expected, atol=1e-6)
    np.testing.assert_allclose(fer8.classify(mirrored, tiny_model, flip=True), averaged, atol=1e-6)
    assert not np.allclose(fer8.classify(faces, tiny_model), averaged, atol=1e-3)


def test_classify_resizes_crops_and_accepts_aligned_faces(tiny_model, astronaut):
    face = fer8.crop_square(astronaut, fer8.Box(175, 65, 99, 99), size=224)
    big, small = (
        fer8.classify([face], tiny_model),
        fer8.classify([face.image[::2, ::2]], tiny_model),
    )
    assert big.shape == small.shape == (1, len(LABELS))
    np.testing.assert_allclose(big, small, atol=0.05)
    with pytest.raises(ValueError, match="RGB uint8"):
        fer8.classify([np.zeros((48, 48), np.uint8)], tiny_model)


@pytest.mark.slow
def test_save_and_load_round_trip(tmp_path, tiny_model_path, tiny_model):
    network, spec = load_keras_model(tiny_model_path)
    path = save_model(network, spec, tmp_path / "copy.fer8")
    again = fer8.load_model(path)
    assert again.spec == tiny_model.spec
    np.testing.assert_allclose(
        fer8.classify(crops(), again), fer8.classify(crops(), tiny_model), atol=1e-6
    )
    assert path.read_bytes() == save_model(network, spec, tmp_path / "again.fer8").read_bytes()


@pytest.mark.slow
def test_onnx_runtime_computes_what_keras_computes(tiny_model_path, tiny_model):
    network, spec = load_keras_model(tiny_model_path)
    on_keras = keras_expression_model(network, spec)
    assert tiny_model.runtime == "onnxruntime" and on_keras.runtime == "tensorflow (float32)"
    np.testing.assert_allclose(
        fer8.classify(crops(), tiny_model), fer8.classify(crops(), on_keras), atol=1e-5
    )
    with pytest.raises(ValueError, match="precision"):
        keras_expression_model(network, spec, precision="float16")


def test_spec_must_match_the_network(tiny_model_path):
    network = OnnxNetwork(read_graph(tiny_model_path))
    wrong = ModelSpec(LABELS[:3], 48, IMAGENET_CAFFE, "test-cnn")
    with pytest.raises(ValueError, match="3 labels"):
        fer8.ExpressionModel(network, wrong)
    with pytest.raises(ValueError, match="input"):
        fer8.ExpressionModel(network, ModelSpec(LABELS, 64, IMAGENET_CAFFE, "x"))
    with pytest.raises(ValueError, match="unique"):
        ModelSpec(("happy", "happy"), 48, IMAGENET_CAFFE, "x")


@pytest.mark.parametrize("content", [b"not a zip", b""])
def test_files_that_are_not_models_are_refused(tmp_path, content):
    path = tmp_path / "model.fer8"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match="not a fer8 model file"):
        fer8.load_model(path)


def test_model_file_without_a_valid_spec_is_refused(tmp_path, tiny_model_path):
    graph_only = tmp_path / "graph-only.fer8"
    with zipfile.ZipFile(tiny_model_path) as src, zipfile.ZipFile(graph_only, "w") as dst:
        dst.writestr("model.onnx", src.read("model.onnx"))
    with pytest.raises(ModelFormatError, match="not a fer8 model file"):
        fer8.load_model(graph_only)
    future = tmp_path / "future.fer8"
    with zipfile.ZipFile(tiny_model_path) as src, zipfile.ZipFile(future, "w") as dst:
        spec = json.loads(src.read("fer8.json"))
        dst.writestr("fer8.json", json.dumps({**spec, "format_version": 99}))
    with pytest.raises(ModelFormatError, match="upgrade fer8"):
        fer8.load_model(future)


# --- names, paths, the cache and downloads -----------------------------------------------


def test_paths_and_run_folders_resolve(tiny_model_path, tmp_path):
    assert resolve_model(tiny_model_path) == tiny_model_path
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.fer8").write_bytes(tiny_model_path.read_bytes())
    assert resolve_model(run) == run / "model.fer8"


def test_unknown_names_list_the_known_ones(tiny_model_path):
    registry = {"small": RegisteredModel("small", "0" * 64, url="file:///nowhere")}
    with pytest.raises(ModelNotFoundError, match="known names: small"):
        resolve_model("large", registry=registry)


def test_no_default_model_says_what_to_do():
    with pytest.raises(ModelNotFoundError, match="no model is installed.*--model"):
        resolve_model(None, registry={})


def test_cache_folder_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("FER8_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "fer8"
    monkeypatch.setenv("FER8_HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home"
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_download_is_verified_and_cached(tiny_model_path, tmp_path, monkeypatch):
    digest = hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    registry = {"tiny": RegisteredModel("tiny", digest, url=tiny_model_path.as_uri())}
    path = resolve_model("tiny", cache=tmp_path, registry=registry)
    assert path == tmp_path / "tiny.fer8" and path.read_bytes() == tiny_model_path.read_bytes()

    # A second resolve uses the cache: no network is touched.
    def no_network(*args, **kwargs):
        raise AssertionError("downloaded again")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    assert resolve_model("tiny", cache=tmp_path, registry=registry) == path


def test_cached_file_that_no_longer_matches_is_fetched_again(tiny_model_path, tmp_path):
    digest = hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    registry = {"tiny": RegisteredModel("tiny", digest, url=tiny_model_path.as_uri())}
    (tmp_path / "tiny.fer8").write_bytes(b"damaged")
    path = resolve_model("tiny", cache=tmp_path, registry=registry)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_download_with_the_wrong_checksum_is_refused_and_not_kept(tiny_model_path, tmp_path):
    registry = {"tiny": RegisteredModel("tiny", "ab" * 32, url=tiny_model_path.as_uri())}
    with pytest.raises(ChecksumMismatchError, match="SHA-256"):
        resolve_model("tiny", cache=tmp_path, registry=registry)
    assert list(tmp_path.iterdir()) == []


def test_bundled_model_is_checked_at_load(tmp_path, monkeypatch, tiny_model_path):
    import fer8.models.registry as registry_module

    models = tmp_path / "fer8" / "models"
    models.mkdir(parents=True)
    (models / "tiny.fer8").write_bytes(tiny_model_path.read_bytes())
    monkeypatch.setattr(registry_module.resources, "files", lambda package: tmp_path / "fer8")
    good = hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    entry = RegisteredModel("default", good, bundled="tiny.fer8")
    assert resolve_model(None, registry={"default": entry}) == models / "tiny.fer8"
    bad = RegisteredModel("default", "cd" * 32, bundled="tiny.fer8")
    with pytest.raises(ChecksumMismatchError):
        resolve_model(None, registry={"default": bad})


def _bundled_tiny(tmp_path, monkeypatch, tiny_model_path):
    """A registry whose default is a copy of the tiny model, bundled, and a count of the
    times a file is hashed."""
    import fer8.models.registry as registry_module

    models = tmp_path / "fer8" / "models"
    models.mkdir(parents=True)
    (models / "tiny.fer8").write_bytes(tiny_model_path.read_bytes())
    monkeypatch.setattr(registry_module.resources, "files", lambda package: tmp_path / "fer8")
    good = hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    hashed = []
    real = registry_module.sha256_file
    monkeypatch.setattr(registry_module, "sha256_file", lambda p: hashed.append(p) or real(p))
    registry = {"default": RegisteredModel("default", good, bundled="tiny.fer8")}
    return models / "tiny.fer8", registry, hashed


def test_bundled_model_is_hashed_once_until_it_changes(tmp_path, monkeypatch, tiny_model_path):
    path, registry, hashed = _bundled_tiny(tmp_path, monkeypatch, tiny_model_path)
    cache = tmp_path / "home"
    assert resolve_model(None, registry=registry, cache=cache) == path
    assert resolve_model(None, registry=registry, cache=cache) == path
    assert len(hashed) == 1  # the second load trusts the stamp the first one left
    assert len(list((cache / "verified").iterdir())) == 1

    path.write_bytes(path.read_bytes())  # the same bytes, written again: hashed again
    assert resolve_model(None, registry=registry, cache=cache) == path
    assert len(hashed) == 2
    path.write_bytes(path.read_bytes()[:-1] + b"!")  # changed: caught
    with pytest.raises(ChecksumMismatchError):
        resolve_model(None, registry=registry, cache=cache)


def test_damaged_checksum_stamp_is_ignored_with_a_warning(
    tmp_path, monkeypatch, tiny_model_path, caplog
):
    path, registry, hashed = _bundled_tiny(tmp_path, monkeypatch, tiny_model_path)
    cache = tmp_path / "home"
    resolve_model(None, registry=registry, cache=cache)
    (stamp,) = (cache / "verified").iterdir()
    stamp.write_bytes(b"\x00{not json")
    with caplog.at_level(logging.WARNING, logger="fer8.models.registry"):
        assert resolve_model(None, registry=registry, cache=cache) == path
    assert "damaged checksum stamp" in caplog.text and len(hashed) == 2
    resolve_model(None, registry=registry, cache=cache)  # the stamp was written anew
    assert len(hashed) == 2


# --- backbones ---------------------------------------------------------------------------


def test_each_backbone_has_its_own_preprocessing():
    assert BACKBONES["resnet50"] == IMAGENET_CAFFE
    assert BACKBONES["vggface-resnet50"] == VGGFACE2
    pixel = np.array([[[[10, 20, 30]]]], np.uint8)  # RGB
    np.testing.assert_allclose(
        VGGFACE2.apply(pixel)[0, 0, 0], [30 - 91.4953, 20 - 103.8827, 10 - 131.0912], rtol=1e-6
    )


@pytest.mark.slow
def test_vggface_resnet50_matches_keras_vggface():
    model = vggface_resnet50(224)
    # keras-vggface's RESNET50(include_top=False) reports 23,561,152 parameters.
    assert model.count_params() == 23_561_152
    assert model.output_shape == (None, 2048)
    assert not any("/" in layer.name for layer in model.layers)
    assert model.get_layer("conv1_7x7_s2").kernel.shape == (7, 7, 3, 64)


def _write_keras2_weights(model, path, *, skip=(), extra=True):
    """A weight file laid out like keras-vggface's: one group per layer, '/' in names."""
    rng = np.random.default_rng(0)
    original = {}
    with h5py.File(path, "w") as file:
        names = []
        for layer in model.layers:
            if not layer.weights or layer.name in skip:
                continue
            name = layer.name.replace("_bn", "/bn").replace("conv1_7x7_s2", "conv1/7x7_s2")
            group = file.create_group(name)
            suffixes = (
                ["gamma", "beta", "moving_mean", "moving_variance"]
                if "bn" in layer.name
                else ["kernel"]
            )
            arrays = [rng.random(w.shape).astype(np.float32) + 0.5 for w in layer.weights]
            weight_names = [f"{name}/{s}:0" for s in suffixes]
            for weight_name, array in zip(weight_names, arrays):
                group.create_dataset(weight_name, data=array)
            group.attrs["weight_names"] = [n.encode() for n in weight_names]
            names.append(name.encode())
            original[layer.name] = arrays
        if extra:  # the with-top file also holds the 8631-way classifier
            group = file.create_group("classifier")
            group.create_dataset("classifier/kernel:0", data=np.zeros((2048, 4)))
            group.attrs["weight_names"] = [b"classifier/kernel:0"]
            names.append(b"classifier")
        file.attrs["layer_names"] = names
        file.attrs["backend"] = b"tensorflow"
        file.attrs["keras_version"] = b"2.2.4"
    return original


@pytest.mark.slow
def test_keras_vggface_weight_files_load_by_layer_name(tmp_path):
    model = vggface_resnet50(32)
    original = _write_keras2_weights(model, tmp_path / "rcmalli_vggface_tf_notop_resnet50.h5")
    load_keras2_weights(model, tmp_path / "rcmalli_vggface_tf_notop_resnet50.h5")
    for name, arrays in original.items():
        for loaded, stored in zip(model.get_layer(name).get_weights(), arrays):
            np.testing.assert_array_equal(loaded, stored)
    # Loading through the backbone builder gives the same network.
    built = build_backbone(
        "vggface-resnet50", 32, tmp_path / "rcmalli_vggface_tf_notop_resnet50.h5"
    )
    x = np.random.default_rng(2).random((1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(built.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5)


@pytest.mark.slow
def test_incomplete_or_foreign_weight_files_are_refused(tmp_path):
    model = vggface_resnet50(32)
    _write_keras2_weights(model, tmp_path / "partial.h5", skip={"conv5_3_3x3"})
    with pytest.raises(ModelFormatError, match="no weights for layer 'conv5_3_3x3'"):
        load_keras2_weights(model, tmp_path / "partial.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ModelFormatError, match="not an HDF5"):
        load_keras2_weights(model, tmp_path / "text.h5")


@pytest.mark.parametrize("backbone", ["resnet50", "vggface-resnet50"])
@pytest.mark.slow
def test_both_resnet50_layouts_run_on_onnx_runtime_as_on_keras(tmp_path, backbone):
    """The model file's ONNX graph computes what Keras computes, for either weight layout
    (their padding, strides and biases differ), with trained-looking BatchNorm."""
    network = _with_trained_statistics(build_classifier(build_backbone(backbone, 32), len(LABELS)))
    spec = ModelSpec(LABELS, 32, BACKBONES[backbone], backbone)
    model = fer8.load_model(save_model(network, spec, tmp_path / "resnet.fer8"))
    assert model.spec.backbone == backbone
    batch = BACKBONES[backbone].apply(crops(4, 32))
    np.testing.assert_allclose(model(batch), network.predict_on_batch(batch), atol=1e-5)
    # and back: Keras reads the graph's weights as they were
    again, _ = load_keras_model(tmp_path / "resnet.fer8")
    for before, after in zip(network.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(before, after)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet18", 32)


def _with_trained_statistics(network):
    """Random BatchNorm statistics and affine terms, as training leaves them (a fresh
    layer is the identity, which would hide a wrong fold)."""
    import keras

    rng = np.random.default_rng(3)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.2, beta.shape),
                    rng.normal(0, 0.5, mean.shape),
                    rng.uniform(0.2, 3, variance.shape),
                ]
            )
    return network


@pytest.mark.parametrize("backbone", ["resnet50", "vggface-resnet50"])
@pytest.mark.slow
def test_folded_batch_norms_give_the_same_outputs(backbone):
    import keras

    from fer8.training.inference import fold_batch_norms, inference_function

    network = _with_trained_statistics(build_classifier(build_backbone(backbone, 32), 3))
    folded = fold_batch_norms(network)
    norms = [
        layer for layer in network.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(norms) == 53  # every BatchNorm of a ResNet50 follows a convolution
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    batch = BACKBONES[backbone].apply(crops(4, 32))
    expected = np.asarray(network.predict_on_batch(batch))
    np.testing.assert_allclose(folded.predict_on_batch(batch), expected, atol=1e-5)
    np.testing.assert_allclose(inference_function(network, 32)(batch), expected, atol=1e-5)
    # The original keeps its layers: it is what training and save_model use.
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in network.layers) == 53


@pytest.mark.slow
def test_batch_norm_is_folded_only_where_that_is_exact():
    import keras

    from fer8.training.inference import fold_batch_norms

    inputs = keras.Input((8, 8, 3))
    shared = keras.layers.Conv2D(4, 3, name="shared")(inputs)  # also feeds the skip path
    normed = keras.layers.BatchNormalization(name="after_shared")(shared)
    activated = keras.layers.Conv2D(4, 1, activation="relu", name="relu_conv")(normed)
    normed_again = keras.layers.BatchNormalization(name="after_relu")(activated)
    plain = keras.layers.Conv2D(4, 1, use_bias=False, name="plain")(normed_again)
    last = keras.layers.BatchNormalization(name="after_plain")(plain)
    network = _with_trained_statistics(keras.Model(inputs, keras.layers.Add()([last, shared])))
    folded = fold_batch_norms(network)
    kept = {
        layer.name for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert kept == {"after_shared", "after_relu"}
    batch = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(
        folded.predict_on_batch(batch), network.predict_on_batch(batch), atol=1e-5
    )


@pytest.mark.shared
@pytest.mark.skipif(
    not (SHARED / "weights/resnet50_imagenet_notop.h5").is_file(),
    reason="../shared/weights/resnet50_imagenet_notop.h5 is absent",
)
@pytest.mark.slow
def test_imagenet_weights_load_from_a_local_file():
    path = SHARED / "weights/resnet50_imagenet_notop.h5"
    pretrained = build_backbone("resnet50", 64, path)
    random = build_backbone("resnet50", 64)
    first = pretrained.get_layer("conv1_conv").get_weights()[0]
    assert not np.allclose(first, random.get_layer("conv1_conv").get_weights()[0])
    # The published ImageNet conv1 kernel has this known scale.
    assert 0.05 < float(np.abs(first).mean()) < 0.2
