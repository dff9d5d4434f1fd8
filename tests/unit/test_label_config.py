import pytest

from ml_backend.label_config import UnsupportedConfig, parse_label_config

GOOD = """<View>
  <Header value="Pick one"/>
  <Image name="photo" value="$img"/>
  <Choices name="species" toName="photo" choice="single-radio">
    <Choice value="cat"/><Choice value="dog"/><Choice value="fox" alias="vulpes"/>
  </Choices>
</View>"""


def test_reads_names_value_key_and_classes():
    cfg = parse_label_config(GOOD)
    assert (cfg.from_name, cfg.to_name, cfg.value_key) == ("species", "photo", "img")
    assert cfg.classes == ("cat", "dog", "vulpes")  # an alias is what results carry


def test_result_round_trips_through_choice_of():
    cfg = parse_label_config(GOOD)
    result = cfg.result("dog")
    assert result[0]["from_name"] == "species" and result[0]["to_name"] == "photo"
    assert cfg.choice_of(result) == "dog"
    assert cfg.choice_of([{"from_name": "other", "type": "choices", "value": {"choices": ["x"]}}]) is None


@pytest.mark.parametrize(
    "xml, words",
    [
        ("", "empty"),
        ("<View><Image", "not valid XML"),
        ('<View><Choices name="c" toName="i"><Choice value="a"/><Choice value="b"/></Choices></View>',
         "one Image"),
        ('<View><Image name="i" value="$image"/></View>', "one Choices"),
        ('<View><Image name="i" value="$image"/><Image name="j" value="$b"/>'
         '<Choices name="c" toName="i"><Choice value="a"/><Choice value="b"/></Choices></View>',
         "found 2"),
        ('<View><Image name="i" value="$image"/><RectangleLabels name="r" toName="i">'
         '<Label value="a"/></RectangleLabels></View>', "RectangleLabels"),
        ('<View><Image name="i" value="$image"/><Choices name="c" toName="i" choice="multiple">'
         '<Choice value="a"/><Choice value="b"/></Choices></View>', "single-choice"),
        ('<View><Image name="i" value="$image"/><Choices name="c" toName="x">'
         '<Choice value="a"/><Choice value="b"/></Choices></View>', "toName"),
        ('<View><Image name="i" value="$image"/><Choices name="c" toName="i">'
         '<Choice value="a"/></Choices></View>', "at least two"),
        ('<View><Image name="i" value="image"/><Choices name="c" toName="i">'
         '<Choice value="a"/><Choice value="b"/></Choices></View>', "$image"),
        ('<!DOCTYPE x [<!ENTITY e "boom">]><View>&e;</View>', "not valid XML"),
    ],
)
def test_unsupported_configs_name_the_problem(xml, words):
    with pytest.raises(UnsupportedConfig, match=words.replace("$", r"\$")):
        parse_label_config(xml)
