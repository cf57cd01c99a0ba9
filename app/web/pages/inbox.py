"""The inbox page: photos without a label, grouped by look or by the model's suggestions.

The page is a shell; `static/inbox.js` fills it from the inbox API (`api_inbox`), so the page
and any API client see the same clusters, suggestions and counts.
"""

from fastapi import Request
from fastapi.responses import HTMLResponse

from app.web.deps import SessionDep
from app.web.pages.common import (
    PageProjectDep,
    SignedInDep,
    page_router,
    project_context,
    render,
)

router = page_router()


@router.get("/projects/{project_id}/inbox", response_class=HTMLResponse)
def inbox_page(request: Request, project: PageProjectDep, session: SessionDep,
               user_session: SignedInDep, similar: int | None = None):
    """`similar`: open with the photos nearest to that image (from the grid's "Find similar")."""
    return render(request, "inbox.html", **project_context(
        session, user_session, project, "inbox", similar=similar))
