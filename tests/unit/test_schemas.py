from recsys_ray import schemas


def test_text_fields_are_the_string_fields_of_the_contract():
    assert schemas.text_fields("interactions") == ["user_id", "item_id", "interaction_type", "event_id"]
    assert schemas.text_fields("items") == ["item_id", "title", "category", "brand", "description"]
    assert schemas.text_fields(None) == ["user_id", "item_id", "interaction_type", "event_id",
                                         "title", "category", "brand", "description"]
