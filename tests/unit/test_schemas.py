from recsys_ray import schemas


def test_text_fields_are_the_string_fields_of_the_contract():
    assert schemas.text_fields("interactions") == ["user_id", "item_id", "interaction_type", "event_id"]
    assert schemas.text_fields("items") == ["item_id", "title", "category", "brand", "description"]
    assert schemas.text_fields(None) == ["user_id", "item_id", "interaction_type", "event_id",
                                         "title", "category", "brand", "description"]


def test_the_json_schema_accepts_exactly_the_interaction_types_the_validator_accepts():
    import jsonschema

    from recsys_ray import validation
    from recsys_ray.config import ValidationConfig
    from recsys_ray.io import formats

    checker = jsonschema.Draft202012Validator(schemas.json_schema("interactions"))
    values = ["click", "Click", "CLICK", "cLiCk", " purchase ", "Add_To_Cart", "\tview\n", "LIKE",
              "teleport", "clicks", "click-", "add to cart", "", " ", "vIeWs"]
    records = [{"user_id": "u", "item_id": "i", "interaction_type": value, "timestamp": 1_700_000_000 + n}
               for n, value in enumerate(values)]
    result = validation.validate(formats.records_to_table(records, "interactions"), "interactions",
                                 ValidationConfig())
    rejected = set(result.rejected.column("row").to_pylist())
    by_service = [n not in rejected for n in range(len(values))]
    by_schema = [checker.is_valid(record) for record in records]
    assert by_schema == by_service
    assert sum(by_service) == 8
