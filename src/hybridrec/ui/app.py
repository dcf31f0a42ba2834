"""The hybridrec web UI (``hybridrec ui``, or ``streamlit run`` of this file).

Two pages, both drawn from the HTTP API at ``HYBRIDREC_API_URL`` and nothing else:

- Recommendations: a known user (searched by id) or a new visitor (a few items liked),
  a strategy and k; each recommended item as a card with its categories, score, the
  method that produced it and the reasons; thumbs up / down (``POST /feedback``), after
  which the list is asked again and shows the effect; "Similar" opens collaborative and
  content neighbours side by side; the user's history beside the list.
- Model: the served version (created, data size), its offline metrics and the target
  metric by user segment, the store's versions and a rollback (admin token in the sidebar).

Widgets and cards carry ``key=``s (Streamlit renders them as the CSS class ``st-key-<key>``)
so browser tests and people's scripts can find them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import streamlit as st

from hybridrec.ui.client import ApiClient, ApiError, ApiUnreachableError, Id, api_url

PAGES = ("Recommendations", "Model")
WHO = ("Known user", "New visitor")
#: A visitor attribute left empty.
NOT_GIVEN = "(not given)"
#: Similarity panel: method → its heading.
SIMILAR = {"cf": "Collaborative (interactions)", "content": "Content (title, categories, tags)"}
SEARCH_LIMIT = 50
HISTORY_LIMIT = 50
SIMILAR_K = 5


@st.cache_resource
def _client(url: str) -> ApiClient:
    # One connection pool per API URL, shared by every session of this process.
    return ApiClient(url)


def _flash(kind: str, text: str) -> None:
    """A message shown once, at the top of the next run (callbacks run before it)."""
    st.session_state["flash"] = (kind, text)


def _show_flash() -> None:
    kind, text = st.session_state.pop("flash", (None, None))
    if kind is None:
        return
    with st.container(key="flash"):
        (st.success if kind == "success" else st.error)(text)


def _label(item: dict[str, Any]) -> str:
    return f"{item.get('title') or 'item'} ({item['item_id']})"


def _remember(items: list[dict[str, Any]]) -> None:
    """Keep item labels seen, so picked items keep their titles across searches."""
    labels: dict[Id, str] = st.session_state.setdefault("item_labels", {})
    for item in items:
        labels[item["item_id"]] = _label(item)


# ---- sidebar ----------------------------------------------------------------------------------


def sidebar(client: ApiClient) -> str | None:
    """Page choice, API state and the admin token; None when the API cannot be used."""
    with st.sidebar:
        st.title("hybridrec")
        page = st.radio("Page", PAGES, key="page")
        st.text_input(
            "Admin token",
            type="password",
            key="admin_token",
            help="The API's HYBRIDREC_ADMIN_TOKEN: needed to roll back a version.",
        )
        st.caption(f"API: {client.base_url}")
        try:
            health = client.health()
        except ApiError as exc:
            with st.container(key="api-error"):
                st.error(str(exc))
            st.button("Try again", key="retry")
            return None
        with st.container(key="api-status"):
            if not health["ready"]:
                st.warning("The API is up but has no model loaded yet (hybridrec train?).")
                return None
            st.success(
                f"Serving {health['model_version']} (default model "
                f"{health['default_model']}); database {health['database']}"
            )
    return str(page)


# ---- recommendations --------------------------------------------------------------------------


def _pick_user(client: ApiClient) -> Id | None:
    query = st.text_input(
        "Search a user id", key="user_query", placeholder="part of an id, e.g. 42"
    ).strip()
    found = client.users(query or None, limit=SEARCH_LIMIT)
    counts = {u["user_id"]: u["history_items"] for u in found["users"]}
    if not counts:
        if not query:
            st.warning("The served version knows no users.")
            return None
        st.warning(
            f"No known user matches {query!r}: it is answered as a new user "
            "(cold start, or from its events since training)."
        )
        return query
    shown = f"{len(counts)} of {found['total']}" if found["total"] > len(counts) else found["total"]
    user: Id = st.selectbox(
        f"User ({shown} matching)",
        list(counts),
        key="user_pick",
        format_func=lambda u: f"{u}  ·  {counts[u]} items",
    )
    return user


def _pick_visitor_items(client: ApiClient) -> list[Id]:
    query = st.text_input(
        "Search the catalog", key="item_query", placeholder="part of a title or an id"
    ).strip()
    found = client.items(query or None, limit=SEARCH_LIMIT)
    _remember(found["items"])
    if query:
        with st.container(key="item_matches"):
            first = (
                f"; the list holds the first {SEARCH_LIMIT}"
                if found["total"] > SEARCH_LIMIT
                else ""
            )
            st.caption(f"{found['total']} catalog items match {query!r}{first}")
    picked: list[Id] = st.session_state.get("visitor_items", [])
    options = list(dict.fromkeys([*picked, *(i["item_id"] for i in found["items"])]))
    labels: dict[Id, str] = st.session_state.get("item_labels", {})
    chosen: list[Id] = st.multiselect(
        "Items the visitor liked",
        options,
        key="visitor_items",
        format_func=lambda i: labels.get(i, str(i)),
        placeholder="pick a few (most popular first)",
    )
    return chosen


def _pick_visitor_attributes(info: dict[str, Any]) -> dict[str, Any]:
    """The visitor's attributes, for the models that read them (``GET /model`` lists them)."""
    attributes = info.get("user_attributes") or []
    if not attributes:
        return {}
    readers = sorted({m for a in attributes for m in a["models"]})
    chosen: dict[str, Any] = {}
    with st.expander("Visitor attributes", expanded=True):
        st.caption(
            f"Read by {', '.join(readers)}: with attributes, even a visitor who picked no "
            "item gets personal results."
        )
        for attr in attributes:
            key = f"attr_{attr['name']}"
            if attr["kind"] == "categorical":
                value = st.selectbox(attr["name"], [NOT_GIVEN, *attr["values"]], key=key)
                if value != NOT_GIVEN:
                    chosen[attr["name"]] = value
            else:
                number = st.number_input(attr["name"], value=None, key=key, placeholder=NOT_GIVEN)
                if number is not None:
                    chosen[attr["name"]] = number
    return chosen


def _visitor_id() -> str:
    # A visitor has no user id; their feedback is stored under one id per browser session.
    vid: str = st.session_state.setdefault("visitor_id", f"visitor-{uuid.uuid4().hex[:12]}")
    return vid


def _send_feedback(
    client: ApiClient, user: Id | None, item: dict[str, Any], value: str, version: str
) -> None:
    """A thumbs callback: store it, and for a visitor also change what is asked next."""
    thumbs = "Thumbs up" if value == "up" else "Thumbs down"
    if user is None:  # a visitor: the liked items (or the denied ones) of the next request
        key = "visitor_items" if value == "up" else "visitor_denied"
        st.session_state[key] = [*st.session_state.get(key, []), item["item_id"]]
    try:
        stored = client.feedback(
            user if user is not None else _visitor_id(),
            item["item_id"],
            value,
            source=item["method"],
            model_version=version,
        )
    except ApiError as exc:
        _flash("error", f"{thumbs} on {_label(item)} was not stored: {exc}")
        return
    effect = "in the history now" if value == "up" else "never recommended again"
    _flash(
        "success",
        f"{thumbs} on {_label(item)} stored (feedback #{stored['id']}, {effect}); the list "
        "below is the next answer.",
    )


def _open_similar(item: dict[str, Any]) -> None:
    st.session_state["similar_of"] = {"item_id": item["item_id"], "title": item.get("title")}


def _close_similar() -> None:
    st.session_state.pop("similar_of", None)


def _similar_panel(client: ApiClient) -> None:
    item = st.session_state.get("similar_of")
    if not item:
        return
    with st.container(border=True, key="similar-panel"):
        head, close = st.columns([6, 1])
        head.subheader(f"Similar to {_label(item)}")
        close.button("Close", key="similar-close", on_click=_close_similar)
        for column, (method, heading) in zip(st.columns(2), SIMILAR.items(), strict=True):
            with column, st.container(key=f"similar-{method}"):
                st.markdown(f"**{heading}**")
                try:
                    body = client.similar(item["item_id"], method=method, k=SIMILAR_K)
                except ApiError as exc:
                    st.error(str(exc))
                    continue
                st.caption(f"answered by {body['method_used']}")
                for n in body["items"]:
                    st.markdown(f"{n['rank']}. {_label(n)} · `{n['score']:.3f}`")
                for note in body["notes"]:
                    st.caption(note)


def _card(
    client: ApiClient,
    item: dict[str, Any],
    categories: list[str],
    user: Id | None,
    version: str,
) -> None:
    rank = item["rank"]
    with st.container(border=True, key=f"card-{rank}"):
        st.markdown(f"**{rank}. {item.get('title') or item['item_id']}**")
        st.caption(f"{' · '.join(categories) or 'no categories'}  ·  item {item['item_id']}")
        st.markdown(f"score `{item['score']:.3f}` · method `{item['method']}`")
        for reason in item["reasons"]:
            st.markdown(f"- {reason}")
        thumbs = (client, user, item)
        # key prefix, label, tooltip, callback and its arguments. Material icons ship with
        # Streamlit (emoji need a font the machine may lack).
        buttons: tuple[tuple[str, str, str, Callable[..., None], tuple[Any, ...]], ...] = (
            ("up", ":material/thumb_up:", "Thumbs up (POST /feedback): a like",
             _send_feedback, (*thumbs, "up", version)),
            ("down", ":material/thumb_down:", "Thumbs down: never recommended again",
             _send_feedback, (*thumbs, "down", version)),
            ("similar", "Similar", "Items like this one, by interactions and by content",
             _open_similar, (item,)),
        )  # fmt: skip
        # Side by side, each as wide as its label, in however narrow a card.
        with st.container(horizontal=True, gap="small"):
            for prefix, label, tip, callback, args in buttons:
                st.button(label, key=f"{prefix}-{rank}", help=tip, on_click=callback, args=args)


def _history(client: ApiClient, user: Id | None, visitor_items: list[Id]) -> None:
    with st.container(key="history"):
        if user is None:
            st.subheader("The visitor liked")
            labels: dict[Id, str] = st.session_state.get("item_labels", {})
            for item in visitor_items:
                st.markdown(f"- {labels.get(item, str(item))}")
            if not visitor_items:
                st.caption("nothing yet: the answer is what everyone gets")
            return
        st.subheader(f"History of user {user}")
        try:
            body = client.history(user, limit=HISTORY_LIMIT)
        except ApiError as exc:
            if exc.status != 404:
                raise
            st.info(f"User {user} is unknown: {exc.detail}.")
            return
        n = len(body["items"])
        more = f" ({n} shown)" if body["total"] > n else ""
        st.caption(f"{body['total']} items{more}; online = since training, newest first")
        st.dataframe(
            [
                {
                    "title": h["title"] or str(h["item_id"]),
                    "categories": ", ".join(h["categories"]),
                    "source": h["source"],
                }
                for h in body["items"]
            ],
            hide_index=True,
            key="history-table",
        )
        if body["disliked"]:
            st.caption("Disliked (never recommended): " + ", ".join(map(_label, body["disliked"])))


def _strategy_controls(info: dict[str, Any]) -> tuple[str, int, float | None]:
    strategies = [str(s) for s in info["strategies"]]
    left, middle, right = st.columns([2, 1, 2])
    strategy = str(
        left.selectbox(
            "Strategy",
            strategies,
            key="strategy",
            help="auto = the router; a strategy whose model the version lacks falls back "
            "(hybrid → ALS → two-tower → content → popular).",
        )
    )
    k = int(middle.number_input("k", min_value=1, max_value=100, value=10, key="k"))
    alpha = None
    if strategy == "mixed":
        alpha = float(
            right.slider(
                "alpha: ALS against popularity",
                min_value=0.0,
                max_value=1.0,
                value=0.8,
                step=0.05,
                key="alpha",
            )
        )
    return strategy, k, alpha


def recommendations_page(client: ApiClient) -> None:
    """Who, how, and the answer as cards beside the history."""
    info = client.model()
    st.header("Recommendations")
    who = st.radio("For", WHO, key="who", horizontal=True)
    strategy, k, alpha = _strategy_controls(info)
    user: Id | None = None
    visitor_items: list[Id] = []
    attributes: dict[str, Any] = {}
    if who == WHO[0]:
        user = _pick_user(client)
        if user is None:
            return
    else:
        visitor_items = _pick_visitor_items(client)
        attributes = _pick_visitor_attributes(info)
    _show_flash()
    _similar_panel(client)
    main, side = st.columns([2, 1], gap="large")
    with side:
        _history(client, user, visitor_items)
    with main:
        if user is not None:
            body = client.recommend_user(user, strategy=strategy, k=k, alpha=alpha)
        else:
            body = client.recommend_visitor(
                visitor_items,
                strategy=strategy,
                k=k,
                alpha=alpha,
                deny=st.session_state.get("visitor_denied", []),
                attributes=attributes,
            )
        _answer(client, body, user)


def _answer(client: ApiClient, body: dict[str, Any], user: Id | None) -> None:
    with st.container(key="answer"):
        who = f"user {user}" if user is not None else "the visitor"
        st.markdown(
            f"**{len(body['items'])} items for {who}** · strategy `{body['strategy']}` → "
            f"answered by `{body['method_used']}` · version `{body['model_version']}` · "
            f"{body['history_items']} history items used"
        )
        if body["cold_start"]:
            st.warning("Cold start: no history at all, so these are the popular items.")
        if body["notes"]:
            fallback = "fallback chain: " if body["fallback"] and not body["cold_start"] else ""
            st.caption(fallback + "; ".join(body["notes"]))
    ids = [item["item_id"] for item in body["items"]]
    found = client.items(ids=ids, limit=max(1, len(ids))) if ids else {"items": []}
    categories = {c["item_id"]: c["categories"] for c in found["items"]}
    columns = st.columns(2)
    for n, item in enumerate(body["items"]):
        with columns[n % 2]:
            _card(client, item, categories.get(item["item_id"], []), user, body["model_version"])


# ---- model ------------------------------------------------------------------------------------


def _rollback(client: ApiClient, current: str) -> None:
    token = str(st.session_state.get("admin_token") or "")
    try:
        done = client.rollback(token, current)
    except ApiError as exc:
        _flash("error", f"Rollback refused: {exc.detail}")
        return
    _flash(
        "success",
        f"Rolled back from {done['rolled_back_from']}: current is {done['current']}, "
        f"serving {done['served']} (loaded in {done['seconds']:.2f} s).",
    )


def _metrics_table(info: dict[str, Any]) -> None:
    target = str(info["target"])
    k = target.partition("@")[2]
    rows = []
    for name, evaluation in info["metrics"].items():
        default = " (default)" if name == info["default_model"] else ""
        row: dict[str, Any] = {"model": name + default}
        row |= {m: v for m, v in evaluation["metrics"].items() if m.endswith(f"@{k}")}
        row["test users"] = evaluation["users"]
        rows.append(row)
    st.subheader(f"Offline metrics at {k} (held-out test)")
    st.dataframe(rows, hide_index=True, key="metrics-table")


def _segment_chart(info: dict[str, Any]) -> None:
    target = str(info["target"])
    data: dict[str, list[Any]] = {"segment": [], "model": [], target: []}
    users: dict[str, int] = {}
    for name, evaluation in info["metrics"].items():
        for segment, values in evaluation["segments"].items():
            users[segment] = int(values.get("users") or 0)
            if values.get(target) is None:
                continue  # a segment without test users has no value
            data["segment"].append(segment)
            data["model"].append(name)
            data[target].append(values[target])
    st.subheader(f"{target} by user segment (training-history length)")
    with st.container(key="segment-chart"):
        if not data["segment"]:
            st.info("No segment had test users.")
            return
        # sort=False: segments in their own order (cold, warm, hot), not alphabetical.
        st.bar_chart(data, x="segment", y=target, color="model", stack=False, sort=False)
    st.caption(" · ".join(f"{segment}: {n} test users" for segment, n in users.items()))


def _versions(client: ApiClient, token: str) -> None:
    versions = client.versions()
    target = versions["target"] or "target"
    st.subheader("Versions")
    st.dataframe(
        [
            {
                "version": v["version"],
                "created": v["created_at"][:19].replace("T", " "),
                "default model": v["default_model"],
                target: v["value"],
                "current": "✓" if v["current"] else "",
                "served": "✓" if v["served"] else "",
            }
            for v in reversed(versions["versions"])
        ],
        hide_index=True,
        key="versions-table",
    )
    st.button(
        "Roll back to the previous version",
        key="rollback",
        on_click=_rollback,
        # From the version this page shows as current, not whatever is current by then.
        args=(client, versions["current"]),
        disabled=not token or not versions["current"],
        help="hybridrec bundle rollback, then the API reloads"
        + ("" if token else " (enter the admin token in the sidebar first)"),
    )


#: The A/B report's online rates, as the page labels them.
_AB_RATES = {
    "positive_feedback_rate": "thumbs up / impression",
    "recommended_event_rate": "events on recommended / impression",
}


def _ab_test(client: ApiClient) -> None:
    report = client.ab()
    st.subheader("A/B test")
    with st.container(key="ab-test"):
        if not report["test"]:
            st.caption("No A/B test has run on this store (hybridrec ab start).")
            return
        state = "running" if report["active"] else "ended"
        st.caption(f"{state} · 95% Wilson intervals, B − A by normal approximation")
        st.dataframe(
            [
                {
                    "arm": arm,
                    "serves": row["serves"],
                    "share": f"{row['share']:.0%}",
                    "users": row["users"],
                    "impressions": row["impressions"],
                    **{
                        label: f"{row[key]['rate']:.4f} [{row[key]['low']:.4f}, "
                        f"{row[key]['high']:.4f}]"
                        for key, label in _AB_RATES.items()
                    },
                }
                for arm, row in report["arms"].items()
            ],
            hide_index=True,
            key="ab-table",
        )
        for key, label in _AB_RATES.items():
            d = report["b_minus_a"][key]
            verdict = f"{d['better']} is better" if d["better"] else "no significant difference"
            st.write(
                f"{label}: B − A = {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]: {verdict}"
            )
        if report["srm"].get("mismatch"):
            st.warning(
                f"Sample ratio mismatch: users per arm {report['srm']['users']} "
                f"(p = {report['srm']['p_value']:.2g}); the rates are not comparable."
            )


def _decisions(client: ApiClient) -> None:
    decisions = client.decisions(limit=20)["decisions"]
    st.subheader("Retraining decisions")
    with st.container(key="decisions"):
        if not decisions:
            st.caption("No retraining has run on this store (hybridrec retrain).")
            return
        st.dataframe(
            [
                {
                    "at": str(d.get("at", ""))[:19].replace("T", " "),
                    "decision": d.get("decision"),
                    "candidate": d.get("candidate"),
                    "serving": d.get("current"),
                    "candidate metric": d.get("candidate_metric"),
                    "serving metric": d.get("current_metric"),
                    "reason": d.get("reason"),
                }
                for d in decisions
            ],
            hide_index=True,
            key="decisions-table",
        )


def model_page(client: ApiClient, token: str) -> None:
    """The served version: facts, metrics, segments, versions, rollback, A/B, retraining."""
    info = client.model()
    st.header(f"Model version {info['version']}")
    _show_flash()
    data = info["data"]
    with st.container(key="model-facts"):
        facts = st.columns(4)
        created = (info["created_at"] or "?")[:19].replace("T", " ")
        facts[0].metric("Created", created[:10])
        for column, key in zip(facts[1:], ("rows", "users", "items"), strict=True):
            value = data.get(key)
            column.metric(f"Training {key}", f"{value:,}" if isinstance(value, int) else "?")
        models = ", ".join(
            n if n == kind else f"{n} ({kind})" for n, kind in info["models"].items()
        )
        st.caption(
            f"created {created} UTC · data: {data.get('source') or '?'} · default model "
            f"{info['default_model']} · models: {models}"
        )
    if info["evaluated"]:
        _metrics_table(info)
        _segment_chart(info)
    else:
        st.info("No offline metrics: " + "; ".join(info["notes"]))
    _versions(client, token)
    _ab_test(client)
    _decisions(client)


def main() -> None:
    """One run of the script: the sidebar, then the page chosen."""
    st.set_page_config(page_title="hybridrec", layout="wide")
    client = _client(api_url())
    page = sidebar(client)
    if page is None:
        return
    pages: dict[str, Callable[[], None]] = {
        "Recommendations": lambda: recommendations_page(client),
        "Model": lambda: model_page(client, str(st.session_state.get("admin_token") or "")),
    }
    try:
        pages[page]()
    except ApiUnreachableError as exc:
        st.error(str(exc))
    except ApiError as exc:
        st.error(f"The API refused a request: {exc}")


if __name__ == "__main__":
    main()
