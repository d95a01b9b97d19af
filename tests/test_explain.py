"""Class activation maps: exact for the head, refused for other heads, and meaningful."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import zipfile

import numpy as np
import pytest
from conftest import LABELS, ROOT, SHARED

import fer8
from fer8.errors import ExplanationError
from fer8.models.modelfile import ONNX_MEMBER, read_graph
from fer8.models.onnx_graph import FEATURES_NAME
from fer8.models.onnx_wire import read_graph_index
from fer8.pipeline.explain import class_maps, feature_maps, head

JAFFE = SHARED / "data" / "jaffe.tar.gz"


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _crops(predictor, *images):
    return [
        crop
        for image in images
        for _, crop in fer8.faces_in_photo(image, landmark_model=predictor.landmark_model)
    ]


@pytest.mark.parametrize("which", ["predictor", "default_predictor"])
def test_each_map_averages_to_its_class_logit(which, request, astronaut, hopper):
    """The maps are the network's own: softmax((mean of each class's map + bias) / T) is
    the probability the model gives (T its calibration temperature, or its temperature
    rule's for each crop), for the tiny test CNN and the bundled model (whose stored
    graph gains the feature-map output when read)."""
    from fer8.pipeline.classification import model_batch

    predictor = request.getfixturevalue(which)
    crops = _crops(predictor, astronaut, hopper)
    probabilities, maps = class_maps(crops, predictor.model)
    _, bias = head(predictor.model)
    spec = predictor.model.spec
    if spec.temperature_rule is None:
        temperature = np.full(len(crops), spec.temperature)
    else:
        batch = spec.preprocessing.apply(model_batch(crops, predictor.model))
        temperature = spec.temperature_rule.temperatures(batch)
    logits = (maps.mean(axis=(2, 3)) + bias) / temperature[:, None]
    np.testing.assert_allclose(_softmax(logits), probabilities, atol=1e-5)
    np.testing.assert_allclose(probabilities, fer8.classify(crops, predictor.model), atol=1e-5)


def test_the_bundled_graph_gains_the_feature_output_from_the_stored_graph():
    path = ROOT / "src/fer8/models/default.fer8"
    with zipfile.ZipFile(path) as archive:
        stored = archive.read(ONNX_MEMBER)
    assert read_graph_index(read_graph(path)).outputs == ["probabilities", FEATURES_NAME]
    # Today's bundled graph predates the output (a repacked one would have it already).
    if FEATURES_NAME not in read_graph_index(stored).outputs:
        assert len(read_graph(path)) > len(stored)


def test_explanations_of_a_photo(default_predictor, two_faces):
    explanations = default_predictor.explain(two_faces)
    result = default_predictor.predict(two_faces)
    assert [e.face.to_dict() for e in explanations] == [f.to_dict() for f in result.faces]
    height, width = two_faces.shape[:2]
    for item in explanations:
        assert item.label == item.face.label
        assert item.heatmap.shape == (224, 224) and item.heatmap.max() == pytest.approx(1.0)
        box, heat = item.region(width, height)
        assert box.clip(width, height) == box and heat.shape == (box.h, box.w)
        # The map lies on the face: its centre of mass is inside the face's box.
        ys, xs = np.mgrid[box.y : box.y + box.h, box.x : box.x + box.w]
        cx, cy = (xs * heat).sum() / heat.sum(), (ys * heat).sum() / heat.sum()
        face = item.face.box
        assert face.x <= cx <= face.x + face.w and face.y <= cy <= face.y + face.h
        full = item.in_image(width, height)
        assert full.shape == (height, width) and full.sum() == pytest.approx(heat.sum())
    # Another class's map: one the largest face was not labelled with.
    other = next(label for label in ("sad", "happy") if label != explanations[0].label)
    asked = default_predictor.explain(two_faces, label=other)
    assert [e.label for e in asked] == [other, other]
    assert not np.allclose(asked[0].activation, explanations[0].activation)
    with pytest.raises(ValueError, match="no class 'bored'"):
        default_predictor.explain(two_faces, label="bored")


def test_fer8_explain_loads_the_model_for_the_call(tiny_model_path, astronaut_path):
    (item,) = fer8.explain(astronaut_path, tiny_model_path)
    assert item.face.label in LABELS and item.heatmap.shape == (224, 224)
    box, png = item.png(512, 512)
    from PIL import Image

    picture = Image.open(io.BytesIO(png))
    assert picture.mode == "RGBA" and max(picture.size) <= 256
    data = item.to_dict(512, 512)
    assert data["box"] == box.to_list() and base64.b64decode(data["png"]) == png


def _saved(keras_model, tmp_path, name):
    from fer8.models.modelfile import ModelSpec
    from fer8.models.preprocessing import IMAGENET_CAFFE
    from fer8.training.keras_models import save_model

    spec = ModelSpec(LABELS, 48, IMAGENET_CAFFE, "test-cnn", name=name)
    return save_model(keras_model, spec, tmp_path / f"{name}.fer8")


@pytest.mark.parametrize("head_kind", ["flatten", "relu"])
@pytest.mark.slow
def test_another_head_predicts_but_is_refused_an_explanation(head_kind, tmp_path, astronaut_path):
    import keras

    inputs = keras.Input((48, 48, 3))
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(inputs)
    if head_kind == "flatten":
        x = keras.layers.Flatten()(x)
    else:
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax")(x)
    path = _saved(keras.Model(inputs, outputs), tmp_path, head_kind)
    predictor = fer8.Predictor(path)
    assert len(predictor.predict(astronaut_path).faces) == 1  # prediction is unaffected
    message = "Flatten" if head_kind == "flatten" else r"'hidden' \(Dense with relu\)"
    with pytest.raises(ExplanationError, match=message):
        predictor.explain(astronaut_path)


@pytest.mark.slow
def test_a_linear_head_after_the_pooling_is_composed_exactly(tmp_path, astronaut):
    """Dropout, Dense and BatchNormalization between the pooling and the output (as in
    FaceNet's bottleneck) are affine, so the map is still exact."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((48, 48, 3))
    x = keras.layers.Rescaling(1 / 64.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    x = keras.layers.Dense(6, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dense(len(LABELS))(x)
    outputs = keras.layers.Activation("softmax")(x)
    model = keras.Model(inputs, outputs)
    bn = model.layers[-3]
    bn.set_weights(
        [w + np.random.default_rng(0).uniform(0.5, 1.5, w.shape) for w in bn.get_weights()]
    )
    predictor = fer8.Predictor(_saved(model, tmp_path, "bottleneck"))
    crops = _crops(predictor, astronaut)
    probabilities, maps = class_maps(crops, predictor.model)
    _, bias = head(predictor.model)
    np.testing.assert_allclose(_softmax(maps.mean(axis=(2, 3)) + bias), probabilities, atol=1e-5)


def test_an_old_graph_without_the_output_still_explains(tiny_model_path, tmp_path, astronaut):
    """A model file whose graph lacks the feature-map output (written before it
    existed) gives the same maps as one that has it."""
    import onnx

    with zipfile.ZipFile(tiny_model_path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    graph = onnx.load_from_string(members[ONNX_MEMBER])
    kept = [node for node in graph.graph.node if FEATURES_NAME not in node.output]
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    outputs = [o for o in graph.graph.output if o.name != FEATURES_NAME]
    del graph.graph.output[:]
    graph.graph.output.extend(outputs)
    members[ONNX_MEMBER] = graph.SerializeToString()
    old = tmp_path / "old.fer8"
    with zipfile.ZipFile(old, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert FEATURES_NAME not in read_graph_index(members[ONNX_MEMBER]).outputs
    new_model, old_model = fer8.load_model(tiny_model_path), fer8.load_model(old)
    crops = _crops(fer8.Predictor(new_model), astronaut)
    for got, want in zip(class_maps(crops, old_model), class_maps(crops, new_model)):
        np.testing.assert_allclose(got, want, atol=1e-6)


def _rank_correlation(a, b):
    ranks = [np.argsort(np.argsort(v.ravel())).astype(float) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def test_maps_change_when_the_dense_weights_are_randomised(
    default_predictor, astronaut, hopper, two_faces
):
    """Adebayo et al.'s model randomisation test: with the classifier's weights drawn
    afresh (Glorot-uniform, as Keras initialises them), the maps of the predicted classes
    no longer rank the face's regions as the trained ones do."""
    crops = _crops(default_predictor, astronaut, hopper, two_faces)
    probabilities, trained = class_maps(crops, default_predictor.model)
    weights, _ = head(default_predictor.model)
    _, features = feature_maps(crops, default_predictor.model)
    np.testing.assert_allclose(
        np.einsum("nkhw,kc->nchw", features, weights), trained, rtol=1e-3, atol=1e-3
    )
    limit = np.sqrt(6 / sum(weights.shape))
    correlations = []
    for seed in range(5):
        randomised = np.random.default_rng(seed).uniform(-limit, limit, weights.shape)
        maps = np.einsum("nkhw,kc->nchw", features, randomised)
        for index, best in enumerate(probabilities.argmax(axis=1)):
            correlations.append(_rank_correlation(trained[index, best], maps[index, best]))
    assert np.mean(np.abs(correlations)) < 0.5


def _region_share(heat, points):
    """Shares of the map inside the mouth's box (landmarks 48-67) and inside a box of
    the same size just above the eyebrows (17-26), centred on them."""
    mouth = points[48:68]
    (mx0, my0), (mx1, my1) = mouth.min(axis=0), mouth.max(axis=0)
    brows = points[17:27]
    centre = brows[:, 0].mean()
    top = brows[:, 1].min()
    w, h = mx1 - mx0, my1 - my0
    regions = [(mx0, my0, mx1, my1), (centre - w / 2, top - h, centre + w / 2, top)]
    total = heat.sum()
    shares = []
    for x0, y0, x1, y1 in regions:
        x0, y0 = max(0, int(round(x0))), max(0, int(round(y0)))
        shares.append(float(heat[y0 : int(round(y1)), x0 : int(round(x1))].sum() / total))
    return shares


@pytest.mark.shared
@pytest.mark.skipif(not JAFFE.is_file(), reason="needs ../shared/data/jaffe.tar.gz")
def test_on_jaffe_happy_faces_the_map_lies_on_the_mouth_more_than_on_the_forehead(
    default_predictor,
):
    mouth, forehead = [], []
    with tarfile.open(JAFFE) as archive:
        for member in archive:
            if member.name.startswith("jaffe/happy/") and member.name.endswith(".tiff"):
                image = fer8.load_image(archive.extractfile(member).read())
                height, width = image.shape[:2]
                for item in default_predictor.explain(image, label="happy"):
                    if item.face.landmarks is None:
                        continue
                    shares = _region_share(item.in_image(width, height), item.face.landmarks)
                    mouth.append(shares[0])
                    forehead.append(shares[1])
    assert len(mouth) >= 30
    print(
        json.dumps(
            {
                "faces": len(mouth),
                "mouth": float(np.mean(mouth)),
                "forehead": float(np.mean(forehead)),
                "mouth_above_forehead": float(np.mean(np.greater(mouth, forehead))),
            }
        )
    )
    assert np.mean(mouth) > np.mean(forehead)


def test_the_cached_optimised_graph_and_the_exported_one_keep_the_feature_output(
    tmp_path, monkeypatch
):
    from fer8.models.export import export_onnx
    from fer8.models.modelfile import read_model_file

    path = ROOT / "src/fer8/models/default.fer8"
    monkeypatch.setenv("FER8_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FER8_GRAPH_CACHE", raising=False)
    first = read_model_file(path)
    (cached,) = (tmp_path / "home" / "onnx").iterdir()
    second = read_model_file(path)  # from the cache
    size = first.spec.input_size
    batch = np.random.default_rng(0).normal(0, 50, (2, size, size, 3)).astype(np.float32)
    for got, want in zip(second.features(batch), first.features(batch)):
        np.testing.assert_allclose(got, want, atol=1e-4)
    exported = export_onnx(path, tmp_path / "model.onnx")
    assert read_graph_index(exported.read_bytes()).outputs == ["probabilities", FEATURES_NAME]
    assert cached.is_file()


def test_explain_with_flip_gives_the_probabilities_predict_gives(tiny_model, astronaut):
    predictor = fer8.Predictor(tiny_model, flip=True)
    (item,) = predictor.explain(astronaut)
    (face,) = predictor.predict(astronaut).faces
    assert item.face.probabilities == pytest.approx(face.probabilities, abs=1e-6)
    (plain,) = fer8.Predictor(tiny_model).explain(astronaut)
    assert not np.allclose(item.activation, plain.activation)  # the mirror's map is in


@pytest.mark.slow
def test_facenet_and_masked_models_are_explained_on_the_input_they_classify(tmp_path, astronaut):
    """The FaceNet backbone (Inception-ResNet-v1, its own layer names) ends in global
    average pooling too: its maps are exact, on the contour-masked crops the model
    classifies."""
    from dataclasses import replace

    import keras

    from fer8.models.modelfile import ModelSpec
    from fer8.models.preprocessing import FACENET
    from fer8.training.backbones import build_classifier
    from fer8.training.facenet import inception_resnet_v1
    from fer8.training.keras_models import save_model

    keras.utils.set_random_seed(5)
    network = build_classifier(inception_resnet_v1(112), len(LABELS))
    spec = ModelSpec(LABELS, 112, replace(FACENET, mask="contour"), "facenet", name="facenet")
    predictor = fer8.Predictor(save_model(network, spec, tmp_path / "facenet.fer8"))
    crops = _crops(predictor, astronaut)
    probabilities, maps = class_maps(crops, predictor.model)
    assert maps.shape[2:] == (2, 2)  # the last feature map at 112 px
    _, bias = head(predictor.model)
    logits = (maps.mean(axis=(2, 3)) + bias) / predictor.model.spec.temperature
    np.testing.assert_allclose(_softmax(logits), probabilities, atol=1e-5)
    np.testing.assert_allclose(probabilities, fer8.classify(crops, predictor.model), atol=1e-5)
    unmasked = fer8.classify([crop.image for crop in crops], predictor.model)
    assert not np.allclose(unmasked, probabilities, atol=1e-5)  # the mask was applied
