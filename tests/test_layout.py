"""The house rules of the code's layout, read from the source of every product module (ast).

Rooms: ``service.api`` (the web), ``service.sale``, ``service.limiter``, ``service.core``,
``service.cli``, and the top-level packages ``worker`` and ``db``. Imports inside functions
count like any other.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

from service.core.settings import REPO_ROOT

PRODUCT = ("service", "worker", "db")
WEB_ROOM = "service.api"
REDIS_FACTORY = "service.core.redis_clients"
KEYS_MODULE = "service.core.keys"
ENTRY_POINTS = {
    "service.cli.main": "the flashsale console script (pyproject.toml)",
    "service.cli.__main__": "python -m service.cli",
    "service.api.app": "uvicorn's factory, service.api.app:serve_app",
    "worker.jobs": "the draining job's function, named in service.sale.order_jobs",
    "db.migrations.env": "Alembic's environment",
}


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


@cache
def _modules(*tops: str) -> dict[str, Path]:
    return {
        _module_name(path): path
        for top in tops
        for path in sorted((REPO_ROOT / top).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


@cache
def _imports(path: Path) -> frozenset[str]:
    """Every module ``path`` imports, anywhere in it; ``from a import b`` counts as ``a`` and
    ``a.b`` (b may be a module)."""
    names = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(names)


def _imports_litestar(path: Path) -> bool:
    return any(name == "litestar" or name.startswith("litestar.") for name in _imports(path))


def _room(module: str) -> str | None:
    """The room a module belongs to: a sub-package of ``service``, or a top-level package."""
    parts = module.split(".")
    if parts[0] == "service":
        return ".".join(parts[:2])
    return parts[0] if parts[0] in PRODUCT else None


def _room_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in _modules(*PRODUCT).items():
        room = _room(module)
        graph.setdefault(room, set())
        graph[room] |= {other for name in _imports(path) if (other := _room(name)) not in (None, room)}
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_service_holds_rooms_only():
    """No module sits loose in ``service/``: each lives in the room of its concern."""
    loose = [m for m, path in _modules("service").items() if m.count(".") == 1 and path.name != "__init__.py"]
    assert loose == []


def test_only_the_web_room_imports_litestar():
    """Rule 1: everything that imports Litestar lives in ``service/api/`` (tests aside)."""
    offenders = [
        module
        for module, path in _modules(*PRODUCT, "bench", "e2e").items()
        if _room(module) != WEB_ROOM and _imports_litestar(path)
    ]
    assert offenders == []


def test_every_refusal_has_its_problem_in_the_one_map():
    """Rule 2: each domain refusal renders through ``problem_for`` (none would be a 500)."""
    import service.limiter.refusals
    import service.sale.refusals  # noqa: F401  (defines the sale's refusals)
    from service.api.problems import REFUSAL_PROBLEMS
    from service.core.refusals import Refusal

    kinds, todo = set(), [Refusal]
    while todo:
        for kind in todo.pop().__subclasses__():
            kinds.add(kind)
            todo.append(kind)
    assert kinds and set(REFUSAL_PROBLEMS) == kinds


def test_the_route_and_the_fast_path_answer_through_the_one_map():
    """Rule 2: the app's exception handlers and ``fast_buy``'s only catch-all are ``problem_for``;
    the fast path names no failure of its own (it once mapped them a second time)."""
    from service.api.app import create_app
    from service.core.refusals import Refusal
    from service.core.settings import Settings

    handlers = create_app(Settings()).exception_handlers
    assert {handlers[kind].__qualname__ for kind in (Refusal, RedisError, OperationalError, Exception)} == {
        "exception_handlers.<locals>.handle"
    }
    fast_buy = _tree(_modules("service")["service.api.fast_buy"])
    caught = {
        ast.unparse(handler.type) for handler in ast.walk(fast_buy) if isinstance(handler, ast.ExceptHandler)
    }
    assert caught <= {"RateLimited", "Exception", "(ValueError, RecursionError)"}, caught
    assert "problem_for" in {node.id for node in ast.walk(fast_buy) if isinstance(node, ast.Name)}


REDIS_CONSTRUCTORS = {
    "Redis",
    "StrictRedis",
    "RedisCluster",
    "Sentinel",
    "ConnectionPool",
    "BlockingConnectionPool",
    "ClusterConnectionPool",
    # Whatever the owner: redis.from_url, redis.asyncio.from_url, Redis.from_url, a pool's…
    "from_url",
    "from_pool",
}


def _calls_a_redis_constructor(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")) in REDIS_CONSTRUCTORS


def _places(allowed_in: str, matches) -> list[str]:
    """``module:line: source`` of every product node ``matches`` finds outside ``allowed_in``."""
    return [
        f"{module}:{node.lineno}: {ast.unparse(node)}"
        for module, path in _modules(*PRODUCT).items()
        if module != allowed_in
        for node in ast.walk(_tree(path))
        if matches(node)
    ]


def _key_literal(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("fs:")


def test_one_factory_builds_every_redis_client():
    """Rule 3: clients and pools (``REDIS_CONSTRUCTORS``, by any owner) only in the factory."""
    assert _places(REDIS_FACTORY, _calls_a_redis_constructor) == []


@pytest.mark.parametrize(
    "call",
    [
        "Redis(host='r')",
        "Redis.from_url(url)",
        "redis.from_url(url)",
        "aioredis.from_url(url)",
        "redis.asyncio.RedisCluster.from_url(url)",
        "Sentinel([('s', 26379)]).master_for('m')",
        "ConnectionPool.from_url(url)",
        "aioredis.BlockingConnectionPool(max_connections=2)",
    ],
)
def test_the_factory_rule_sees_every_way_to_build_a_client(call):
    assert any(_calls_a_redis_constructor(node) for node in ast.walk(ast.parse(call)))


def test_every_redis_key_name_is_built_in_the_keys_module():
    """Rule 4: no ``fs:`` literal anywhere else in the product."""
    assert _places(KEYS_MODULE, _key_literal) == []


def _documented_keys(script: str) -> list[str]:
    """The key names a script's header gives for its ``KEYS[n]`` lines."""
    source = (REPO_ROOT / "lua" / script).read_text(encoding="utf-8")
    lines = [line for line in source.splitlines() if re.match(r"--\s+KEYS\[[0-9.n]+\]", line)]
    return [key.rstrip(":,") for line in lines for key in re.findall(r"(?:fs|rq):\S+", line)]


def test_lua_readme_lists_the_keys_each_script_documents():
    """Rule 4: ``lua/README.md``'s key column names every key a script's header says it takes
    (admit.lua: nine, then the buckets)."""
    readme = (REPO_ROOT / "lua" / "README.md").read_text(encoding="utf-8")
    rows = {m[1]: m[2] for m in re.finditer(r"^\| `([a-z_.]+\.lua)` \| (.*?) \|", readme, re.MULTILINE)}
    assert len(_documented_keys("admit.lua")) == 9
    missing = {
        script: [key for key in _documented_keys(script) if f"`{key}`" not in row]
        for script, row in rows.items()
        if script != "buckets.lib.lua"
    }
    assert not any(missing.values()), missing


def test_db_imports_nothing_of_service_or_worker():
    """Rule 5: the database package stands alone (the migration env is given its URL)."""
    assert _room_graph()["db"] == set()


def _litestar_rooms() -> set[str]:
    return {_room(module) for module, path in _modules(*PRODUCT).items() if _imports_litestar(path)}


def test_worker_and_db_reach_no_litestar():
    """Rule 5: neither imports a room that imports Litestar, directly or through another."""
    graph = _room_graph()
    for start in ("worker", "db"):
        assert not ({start} | _reachable(graph, start)) & _litestar_rooms(), start


def test_no_import_cycles_between_rooms():
    """Rule 5: the rooms form layers (cli > api > sale > limiter > core > db; worker beside api)."""
    graph = _room_graph()
    cycles = sorted(room for room in graph if room in _reachable(graph, room))
    assert cycles == [], {room: sorted(graph[room]) for room in cycles}


def test_product_modules_are_all_reached_from_an_entry_point():
    """Rule 6: a product module only tests import belongs in ``tests/support/``."""
    modules = _modules(*PRODUCT)
    graph = {module: {name for name in _imports(path) if name in modules} for module, path in modules.items()}
    reached = set(ENTRY_POINTS)
    for entry in ENTRY_POINTS:
        reached |= _reachable(graph, entry)
    packages = {m for m, path in modules.items() if path.name == "__init__.py"}
    migrations = {m for m in modules if m.startswith("db.migrations.versions.")}
    assert sorted(set(modules) - reached - packages - migrations) == []
