"""The spec: presets and their margins, files and options, errors that name the field."""

from __future__ import annotations

import math
import pickle

import pytest

from streamvol.augment import Augment, Flip, Noise, Rotate, Scale, Shift
from streamvol.shard.plan import rotation_margin


@pytest.mark.parametrize(
    ("name", "crop", "margin"),
    [
        ("none", 64, (0, 0, 0)),
        ("flips", 64, (0, 0, 0)),
        ("flips", (32, 64, 64), (0, 0, 0)),
        # sphere of the cube (55.4) grown by 1 / 0.9 for zoom-out, minus 32, plus shift 2
        ("default", 64, (32, 32, 32)),
        # about z: in-plane radius 45.25 plus 32 sin(10 deg); z: 32 plus 45.25 sin(10 deg)
        ("cryoet", 64, (8, 19, 19)),
    ],
)
def test_presets_have_their_documented_margins(name, crop, margin):
    assert Augment.preset(name).margin(crop) == margin


def test_free_rotation_margin_is_the_sharders_sphere_margin():
    spec = Augment(rotate=Rotate("free"), shift=Shift(max=3))
    for crop in (16, 64, (20, 40, 64)):
        assert spec.margin(crop) == rotation_margin(crop, 3)
    assert (
        Augment(rotate=Rotate("free")).margin(64) == (math.ceil(64 * (math.sqrt(3) - 1) / 2),) * 3
    )


def test_margin_grows_with_zoom_out_and_elastic_but_not_zoom_in():
    base = Augment(rotate=Rotate("free")).margin(32)
    assert Augment(rotate=Rotate("free"), scale=Scale((1.0, 1.5))).margin(32) == base
    assert Augment(rotate=Rotate("free"), scale=Scale((0.5, 1.0))).margin(32)[0] > base[0]
    elastic = Augment.from_dict({"rotate": {"mode": "free"}, "elastic": {"magnitude": 2.5}})
    assert elastic.margin(32) == tuple(m + 3 for m in base)


def test_steps_with_p_zero_need_no_margin():
    spec = Augment(rotate=Rotate("free", p=0.0), shift=Shift(max=5, p=0.0))
    assert spec.margin(64) == (0, 0, 0)


def test_small_z_rotation_needs_less_than_a_half_turn():
    small = Augment(rotate=Rotate("z", max_angle=10)).margin(64)
    full = Augment(rotate=Rotate("z", max_angle=180)).margin(64)
    assert small[0] == full[0] == 0
    assert 0 < small[1] < full[1]


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Rotate(mode="diagonal"), "rotate.mode"),
        (lambda: Rotate(max_angle=270), "rotate.max_angle"),
        (lambda: Rotate(mode="free", max_tilt=5), "rotate.max_tilt"),
        (lambda: Rotate(p=1.5), "rotate.p"),
        (lambda: Flip(p=(0.5, 0.5)), "flip.p"),
        (lambda: Shift(max=-1), "shift.max"),
        (lambda: Scale(range=(1.2, 0.8)), "scale.range"),
        (lambda: Scale(range=(0.0, 1.0)), "scale.range"),
        (lambda: Noise(std=(0.0, "a")), "noise.std"),
        (lambda: Augment.from_dict({"gamma": {"range": [0, 1]}}), "gamma.range"),
        (lambda: Augment.from_dict({"blur": {"sigma": [0, 20]}}), "blur.sigma"),
        (lambda: Augment.from_dict({"elastic": {"grid": 1}}), "elastic.grid"),
        (lambda: Augment.from_dict({"noise": {"sdt": [0, 1]}}), "noise.sdt"),
        (lambda: Augment.from_dict({"noize": {}}), "noize"),
        (lambda: Augment.preset("heavy"), "preset"),
        (lambda: Augment.from_options(rotate_max_anlge=3), "rotate_max_anlge"),
        (lambda: Augment.from_options(flip="xw"), "flip"),
    ],
)
def test_bad_specs_raise_value_error_naming_the_field(build, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build()


def test_from_file_toml_over_a_preset(tmp_path):
    path = tmp_path / "aug.toml"
    path.write_text(
        'preset = "cryoet"\n[noise]\nstd = [0.0, 0.3]\np = 1.0\n[rotate]\nmax_tilt = 5\n'
    )
    spec = Augment.from_file(path)
    assert spec.noise == Noise(std=(0.0, 0.3), p=1.0)
    assert spec.rotate == Rotate("z", 180.0, 5.0)
    assert spec.flip == Augment.preset("cryoet").flip


def test_from_file_yaml(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "aug.yaml"
    path.write_text("rotate:\n  mode: '90'\nflip:\n  p: 0.5\n")
    assert Augment.from_file(path) == Augment.preset("flips")


def test_from_file_names_the_file_and_the_unknown_keys(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[rotate]\nmode = 'free'\n[sharpen]\namount = 1\n")
    with pytest.raises(ValueError, match=r"bad\.toml.*sharpen"):
        Augment.from_file(path)
    broken = tmp_path / "broken.toml"
    broken.write_text("[rotate\n")
    with pytest.raises(ValueError, match=r"broken\.toml"):
        Augment.from_file(broken)


def test_from_options_reads_cli_text():
    spec = Augment.from_options(
        preset="none",
        rotate="z",
        rotate_max_angle="30",
        flip="yx",
        noise="0,0.1",
        noise_p=0.5,
        shift=None,  # an unset CLI flag
    )
    assert spec.rotate == Rotate("z", 30.0)
    assert spec.flip == Flip((0.0, 0.5, 0.5))
    assert spec.noise == Noise((0.0, 0.1), 0.5)
    assert spec.shift == Shift()


def test_to_dict_round_trips_and_specs_pickle():
    for name in ("none", "flips", "default", "cryoet"):
        spec = Augment.preset(name)
        assert Augment.from_dict(spec.to_dict()) == spec
        assert pickle.loads(pickle.dumps(spec)) == spec
