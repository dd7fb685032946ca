import pytest

from robustvision.registry import Registry, UnknownNameError


def test_register_create_list_and_hint():
    reg = Registry("thing")

    @reg.register("alpha", family="a")
    def make_alpha(x=1):
        return ("alpha", x)

    reg.add("alphabet", lambda: "ab", family="b")
    assert reg.create("alpha", x=3) == ("alpha", 3)
    assert reg.list("alp*") == ["alpha", "alphabet"]
    assert reg.list(family="b") == ["alphabet"]
    assert "alpha" in reg and len(reg) == 2
    with pytest.raises(UnknownNameError, match="did you mean 'alpha'"):
        reg.create("alpah")
    with pytest.raises(ValueError):
        reg.add("alpha", lambda: None)
