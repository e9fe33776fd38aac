"""Which pages each account sees: the menu by role, and the pages it may not use hidden.

Pure (no Streamlit calls): ``app.py`` turns the entries into ``st.Page``s. A page an account may
not use is left out of its menu but kept, hidden, in the navigation, so its address opens it and
the page itself says which role it needs (an address typed or bookmarked used to land silently
on another page).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from leukemia_core.accounts import Permission, User


@dataclass(frozen=True)
class PageEntry:
    file: str  # under pages/
    title: str
    icon: str
    hidden: bool = False  # in the navigation (its address opens it) but in no menu


SECTIONS: dict[str, tuple[Permission, tuple[PageEntry, ...]]] = {
    "Sample": (Permission.ANALYZE, (PageEntry("analyze.py", "Analyze", ":material/upload:"),
                                    PageEntry("review.py", "Review cells", ":material/grid_view:"),
                                    PageEntry("counts.py", "Counts", ":material/percent:"))),
    "Record": (Permission.ANALYZE, (PageEntry("case.py", "Case & sign-off", ":material/verified:"),
                                    PageEntry("cases.py", "Case list", ":material/folder_open:"),
                                    PageEntry("report.py", "Report", ":material/description:"))),
    "Models": (Permission.MANAGE_MODELS, (PageEntry("retrain.py", "Retrain & compare",
                                                    ":material/model_training:"),)),
    "Admin": (Permission.MANAGE_USERS, (PageEntry("accounts.py", "Accounts", ":material/group:"),)),
}  # fmt: skip
DEFAULT_PAGE = "analyze.py"


def every_page() -> list[PageEntry]:
    return [page for _, pages in SECTIONS.values() for page in pages]


def menu(user: User) -> dict[str, list[PageEntry]]:
    """Sections of the account's menu; the pages it may not use follow, hidden, in the first."""
    sections = {name: list(pages) for name, (permission, pages) in SECTIONS.items()
                if user.can(permission)}  # fmt: skip
    refused = [replace(p, hidden=True)
               for name, (permission, pages) in SECTIONS.items() if not user.can(permission)
               for p in pages]  # fmt: skip
    if refused:
        sections.setdefault(next(iter(sections), "Sample"), []).extend(refused)
    return sections


def refused_note(page: PageEntry, user: User, instead: PageEntry) -> str:
    """Why the page an address named is not the one shown after logging in there."""
    needed = next(permission for permission, pages in SECTIONS.values()
                  if any(p.file == page.file for p in pages))  # fmt: skip
    return (
        f"The address you opened is **{page.title}**, which needs an account that may "
        f"{needed.value}; yours ({user.name}) may not, so {instead.title} opened instead."
    )


def lone_page_note(sections: dict[str, list[PageEntry]]) -> str | None:
    """Why there is no menu, when the account may use one page only (Streamlit then shows none)."""
    visible = [p.title for pages in sections.values() for p in pages if not p.hidden]
    if len(visible) != 1:
        return None
    return (f"Your account opens one page, {visible[0]}, so there is no menu. Analysing and "
            "reviewing samples need the reviewer role.")  # fmt: skip
