"""Definition rules checked when a flow class is created (SPEC 2)."""

from __future__ import annotations

import pytest

from flowkit import Flow, and_, listen, or_, router, start
from flowkit.exceptions import FlowDefinitionError, FlowkitError


def test_flow_without_start_is_rejected_at_class_creation() -> None:
    """A flow with no @start is a definition error naming the class."""
    with pytest.raises(FlowDefinitionError, match="NoStart has no @start"):

        class NoStart(Flow):
            @listen("x")
            def a(self) -> None: ...


def test_definition_errors_are_type_errors_and_flowkit_errors() -> None:
    """Definition errors subclass both FlowkitError and TypeError."""
    with pytest.raises(TypeError) as info:

        class Bad(Flow):
            @listen("x")
            def a(self) -> None: ...

    assert isinstance(info.value, FlowkitError)


def test_method_listening_to_itself_is_rejected() -> None:
    """A method whose condition names itself, in a flow without routers, is rejected."""
    with pytest.raises(FlowDefinitionError, match=r"SelfLoop\.again listens to itself"):

        class SelfLoop(Flow):
            @start()
            def begin(self) -> None: ...

            @listen(or_("begin", "again"))
            def again(self) -> None: ...


def test_own_name_as_router_label_fires_but_own_completion_does_not() -> None:
    """@listen("approved") def approved: the router's label runs it, once; its own
    completion does not trigger it again."""
    calls: list[str] = []

    class Labels(Flow):
        @start()
        def begin(self) -> None: ...

        @router(begin)
        def decide(self) -> str:
            return "approved"

        @listen("approved")
        def approved(self) -> str:
            calls.append("approved")
            return "done"

    assert Labels().kickoff() == "done"
    assert calls == ["approved"]


def test_listener_on_foreign_method_object_is_rejected() -> None:
    """Listening to a method object of another class names the method and the flow."""

    class Other(Flow):
        @start()
        def elsewhere(self) -> None: ...

    with pytest.raises(FlowDefinitionError, match=r"Mine.follow listens to .*elsewhere"):

        class Mine(Flow):
            @start()
            def begin(self) -> None: ...

            @listen(Other.elsewhere)
            def follow(self) -> None: ...


def test_method_with_two_required_arguments_is_rejected() -> None:
    """A flow method receives at most one value; two required parameters are an error."""
    with pytest.raises(FlowDefinitionError, match=r"Two\.b takes 2 required arguments"):

        class Two(Flow):
            @start()
            def a(self) -> None: ...

            @listen(a)
            def b(self, x: object, y: object) -> None: ...


def test_abstract_base_without_start_is_allowed_and_subclass_completes_it() -> None:
    """abstract=True skips validation; the subclass adds the start and is complete."""

    class Base(Flow, abstract=True):
        @listen("begin")
        def finish(self) -> str:
            return "finished"

    class Concrete(Base):
        @start()
        def begin(self) -> None: ...

    assert Concrete().kickoff() == "finished"
    with pytest.raises(TypeError, match="abstract"):
        Base()


def test_conflicting_decorators_are_rejected() -> None:
    """@listen and @router on one method is an error; @start + @router combine."""
    with pytest.raises(FlowDefinitionError, match="bare @router"):

        class Both(Flow):
            @start()
            def a(self) -> None: ...

            @router(a)
            @listen(a)
            def b(self) -> None: ...

    class StartRouter(Flow):
        @start()
        @router()
        def decide(self) -> str:
            return "yes"

        @listen("yes")
        def agreed(self) -> str:
            return "agreed"

    assert StartRouter().kickoff() == "agreed"


def test_empty_or_and_are_rejected() -> None:
    """or_() and and_() need at least one part."""
    with pytest.raises(FlowDefinitionError, match=r"or_\(\) needs"):
        or_()
    with pytest.raises(FlowDefinitionError, match=r"and_\(\) needs"):
        and_()
