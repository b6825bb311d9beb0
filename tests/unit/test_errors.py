import pytest

from inferd import errors


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidRequest("x"), 400),
        (errors.UnsupportedInput("x"), 400),
        (errors.Unauthorized("x"), 401),
        (errors.Forbidden("x"), 403),
        (errors.SpendingLimitReached("x"), 402),
        (errors.ModelNotFound("x"), 404),
        (errors.NotFound("x"), 404),
        (errors.Conflict("x"), 409),
        (errors.InputTooLarge("x"), 413),
        (errors.Overloaded("x", retry_after=2), 429),
        (errors.ModelNotReady("x"), 503),
        (errors.ModelUnavailable("x"), 503),
        (errors.EngineError("x"), 500),
    ],
)
def test_every_error_has_its_status(error, status):
    assert error.status == status


def test_every_error_class_is_in_the_table():
    classes = {cls for cls, _ in errors.STATUS_TABLE}
    defined = {
        obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, errors.InferdError)
    }
    assert defined <= classes


def test_subclasses_come_before_their_parents_in_the_table():
    seen: list[type] = []
    for cls, _ in errors.STATUS_TABLE:
        assert not any(issubclass(cls, earlier) for earlier in seen), cls
        seen.append(cls)


def test_an_error_survives_pickling_whole():
    # a model replica on Ray Serve raises it, the ingress answers it: param and retry_after stay
    import pickle

    for error in (errors.Overloaded("full", retry_after=3), errors.InvalidRequest("bad", param="input")):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error)
        assert (back.message, back.param, back.retry_after, back.status) == \
            (error.message, error.param, error.retry_after, error.status)
