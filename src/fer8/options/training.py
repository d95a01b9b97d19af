"""The settings of a training run: :class:`TrainOptions` decides what is learnt (it is the
base of :class:`fer8.training.loop.TrainConfig`, stored in ``config.json``);
:class:`RunOptions`, ``fer8 train``'s, adds what is read and where the run is kept."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fer8.models.preprocessing import MASKS
from fer8.options.pipeline import DetectionOptions
from fer8.options.settings import Options, group, setting

#: The networks ``fer8 train --backbone`` builds.
BACKBONES = ("resnet50", "vggface-resnet50", "facenet")


@dataclass(frozen=True, kw_only=True)
class TrainOptions(Options):
    """Everything that decides what a run learns, but its data and its detector (see
    :class:`fer8.training.loop.TrainConfig`, whose docstring says each in full).

    Attributes:
        val_fraction: Share of each --data held out for validation, per class, when no --val
            is given.
        epochs: Epochs at most. With --resume a larger value extends the run (the learning-rate
            schedule fixed at its start is kept).
        batch_size: Images per training step.
        image_size: Side of the model input; 112 trains about 4x faster on CPUs. At least 75 for
            facenet, 32 for resnet50.
        backbone: facenet: FaceNet's Inception-ResNet-v1, trained to recognise faces (start it from
            --backbone-weights facenet_keras.h5, see docs/training.md). Default: the --init-model's,
            else the bundled model's when no --backbone-weights are given, else resnet50.
        backbone_weights: Starting weights instead of a model: 'imagenet' (resnet50 only; downloaded
            once by Keras), a weight file (a keras-vggface .h5 for vggface-resnet50,
            facenet_keras.h5 for facenet), or 'none'. Default: the bundled model's backbone starts
            from the bundled model (no download), another from none.
        init_model: Start from a trained .fer8 model, e.g. to fine-tune on your faces or at a larger
            --image-size; classes it lacks (say worry) start fresh.
        freeze_stages: Keep the first N stages of the backbone frozen (ResNet50: 1-5; FaceNet: 1-4,
            its parts; faster, less overfitting).
        learning_rate: Peak AdamW learning rate (warm-up, then cosine decay).
        warmup_epochs: Epochs of linear learning-rate warm-up.
        weight_decay: AdamW decoupled weight decay.
        label_smoothing: Share of each one-hot target spread evenly over all classes (Keras'
            label_smoothing); not used with --soft-labels.
        ema_momentum: Validate and save an exponential moving average of the weights with this
            momentum (e.g. 0.999; 0: the weights themselves).
        soft_labels: Train on FER+ vote distributions instead of majority labels.
        class_weighting: Loss weights against class imbalance.
        patience: Stop after N epochs without a better validation accuracy.
        steps_per_epoch: Steps per epoch (default: one pass over the training data).
        precision: auto: mixed bfloat16 where the CPU has AVX512-BF16/AMX.
        seed: Seed of the validation split, the shuffling, the augmentation and the new layers'
            starting weights.
        grayscale: Whether the model sees faces in gray (default: gray when every training face is
            gray or --init-model's model is gray).
        teachers: A trained model whose probabilities on each training face are blended into its
            target (knowledge distillation); repeat for several, whose mean is used.
        teacher_weight: The teachers' share of each target; the label keeps the rest.
        mask: contour: cut every face out along its landmark contour onto black, in training and
            (recorded in the model) at prediction, so that sources cut out differently (the
            AffectNet-like set) look alike. random: cut each training face out so half the time,
            drawn afresh each time it is seen; validation and prediction unmasked. Default: as the
            model the run starts from does.
    """

    val_fraction: float = setting(0.1, min=0, max=1, min_open=True, max_open=True)
    epochs: int = setting(30, min=1)
    batch_size: int = setting(32, min=1)
    # The backbone's own minimum is checked when the run starts (check_image_size).
    image_size: int = setting(224, min=32, strict=False)
    backbone: str | None = setting(None, choices=BACKBONES, strict=False)
    backbone_weights: str | None = setting(None, metavar="imagenet|PATH|none")
    init_model: str | None = setting(None, path="existing file")
    freeze_stages: int = setting(0, min=0, max=5)
    learning_rate: float = setting(3e-4, min=0, min_open=True)
    warmup_epochs: float = setting(1.0, min=0)
    weight_decay: float = setting(1e-4, min=0, cli=False)
    label_smoothing: float = setting(0.1, min=0, max=1)
    ema_momentum: float = setting(0.0, min=0, max=1, max_open=True)
    soft_labels: bool = setting(False)
    class_weighting: str = setting("sqrt", choices=("sqrt", "balanced", "none"))
    patience: int = setting(5, min=1)
    steps_per_epoch: int | None = setting(None, min=1)
    precision: str = setting("auto", choices=("auto", "float32", "bfloat16"))
    seed: int = setting(0)
    grayscale: bool | None = setting(None, flag="--grayscale/--colour")
    teachers: tuple[str, ...] = setting((), flag="--teacher", metavar="NAME|PATH")
    teacher_weight: float = setting(0.5, min=0, max=1)
    mask: str | None = setting(None, choices=(*(mask for mask in MASKS if mask), "random", "none"))


@dataclass(frozen=True, kw_only=True)
class KeepClassesOptions(Options):
    """How ``fer8 train --keep-classes`` fits the new classes
    (:func:`fer8.training.new_class.add_classes`).

    Attributes:
        max_old_drop: With --keep-classes: points of recall that the new classes may cost each
            old class on its held-out faces (gray and colour apart). Larger reads the new
            class more often, and old faces as it more often too; the report gives both.
        l2: Weight decay of the new columns (times their squared norm).
        steps: Gradient steps (Adam) of the fit.
    """

    max_old_drop: float = setting(0.5, min=0, max=100, metavar="POINTS")
    l2: float = setting(1e-3, min=0, cli=False)
    steps: int = setting(300, min=1, cli=False)


@dataclass(frozen=True, kw_only=True)
class RunOptions(Options):
    """``fer8 train``'s settings: what a run reads, what it learns (``training``, stored in
    its config), where it is kept, and how it goes about it (the arguments of
    :func:`fer8.training.loop.train` beside its config).

    Attributes:
        data: Training data: class folders, a FER+ folder (label.csv), an ExpW folder (label.lst) or
            fer2013.csv, or an archive of one (.tar.gz, .zip; ARCHIVE/FOLDER for one of several
            inside). Repeat for several sources; @train or @val takes one side of the fixed split
            (by photo, film or subject); :WEIGHT draws each image that many times per epoch (e.g.
            expw@train:3).
        out: Run folder: checkpoints, model.fer8, history.csv, curves.png.
        val: Validation data; repeat for several (the best epoch has the best mean accuracy over
            them). Default: --val-fraction of each --data, per class.
        training: What the run learns.
        resume: Continue the run in --out at its next epoch.
        cache: Crop cache folder (default: crops/ in the fer8 cache, see FER8_HOME).
        workers: Threads detecting and aligning faces while preparing crops.
        keep_checkpoint: Keep checkpoint.keras when the run ends, to extend it later with --resume
            --epochs N (by default only model.fer8 is kept).
        keep_classes: Add the classes of --data (one folder of class folders, e.g. DATA/worry/) to
            the start model's, in minutes and without TensorFlow: the network stays, a new
            classifier row is learnt against the feature bank in the model file. Uses --init-model,
            --val, --cache, --workers and --max-old-drop only; see docs/training.md.
        keep: How --keep-classes fits the new classes.
        detection: How faces are found in photos.
    """

    data: tuple[str, ...] = setting(metavar="PATH[@SPLIT][:WEIGHT]")
    out: Path = setting(path="dir")
    val: tuple[str, ...] = setting((), metavar="PATH[@SPLIT]")
    training: TrainOptions = group(TrainOptions)
    resume: bool = setting(False)
    cache: Path | None = setting(None, path="dir")
    workers: int = setting(2, min=1)
    keep_checkpoint: bool = setting(False)
    keep_classes: bool = setting(False)
    keep: KeepClassesOptions = group(KeepClassesOptions)
    detection: DetectionOptions = group(DetectionOptions)
