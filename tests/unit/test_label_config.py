import pytest

from ml_backend.label_config import UnsupportedConfig, parse_label_config
from model.questions import Question

GOOD = """<View>
  <Header value="Pick one"/>
  <Image name="photo" value="$img"/>
  <Choices name="species" toName="photo" choice="single-radio">
    <Choice value="cat"/><Choice value="dog"/><Choice value="fox" alias="vulpes"/>
  </Choices>
</View>"""


def test_reads_names_value_key_and_classes():
    cfg = parse_label_config(GOOD)
    assert (cfg.to_name, cfg.value_key) == ("photo", "img")
    assert cfg.questions == (Question("species", ("cat", "dog", "vulpes")),)  # aliases: results
    assert cfg.single == cfg.questions[0]


def test_result_round_trips_through_answers_of():
    cfg = parse_label_config(GOOD)
    result = cfg.result({"species": ("dog",)})
    assert result[0]["from_name"] == "species" and result[0]["to_name"] == "photo"
    assert cfg.answers_of(result) == {"species": ("dog",)}
    assert cfg.answers_of([{"from_name": "other", "type": "choices",
                            "value": {"choices": ["x"]}}]) == {}


TWO_QUESTIONS = """<View>
  <Image name="img" value="$image"/>
  <Header value="What is in the picture?"/>
  <Choices name="animals" toName="img" choice="multiple">
    <Choice value="cat"/><Choice value="dog"/>
  </Choices>
  <View><Text name="hint" value="How many?"/>
  <Choices name="count" toName="img" choice="single-radio">
    <Choice value="one"/><Choice value="many"/>
  </Choices></View>
</View>"""


def test_several_questions_single_and_multiple_in_any_layout():
    cfg = parse_label_config(TWO_QUESTIONS)
    assert cfg.questions == (Question("animals", ("cat", "dog"), multiple=True),
                             Question("count", ("one", "many")))
    assert cfg.single is None
    answers = {"animals": ("cat", "dog"), "count": ("many",)}
    result = cfg.result(answers)
    assert [r["from_name"] for r in result] == ["animals", "count"]
    assert cfg.answers_of(result) == answers
    # A question left unanswered, and a multiple-choice question with nothing chosen.
    assert cfg.answers_of(cfg.result({"count": ("one",)})) == {"count": ("one",)}
    assert cfg.result({"animals": (), "count": ("one",)}) == cfg.result({"count": ("one",)})
    # Two labels for a single-choice question answer nothing.
    bad = [{"from_name": "count", "type": "choices", "value": {"choices": ["one", "many"]}}]
    assert cfg.answers_of(bad) == {}


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
        ('<View><Image name="i" value="$image"/><Choices name="c" toName="i" choice="many">'
         '<Choice value="a"/><Choice value="b"/></Choices></View>', "choice='many'"),
        ('<View><Image name="i" value="$image"/><Choices name="c" toName="i" perRegion="true">'
         '<Choice value="a"/><Choice value="b"/></Choices></View>', "perRegion"),
        ('<View><Image name="i" value="$image"/><Taxonomy name="t" toName="i">'
         '<Choice value="a"/></Taxonomy></View>', "Taxonomy"),
        ('<View><Image name="i" value="$image"/><Choices name="c" toName="i">'
         '<Choice value="a"/><Choice value="b"/></Choices><Choices name="c" toName="i">'
         '<Choice value="a"/><Choice value="b"/></Choices></View>', "unique"),
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
