"""Sign-in and sign-out pages."""

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse

from app.services import auth
from app.web.deps import SESSION_COOKIE, SessionDep, SettingsDep
from app.web.pages.common import (
    CsrfFormDep,
    PageSessionDep,
    page_router,
    redirect,
    render,
)

router = page_router()


@router.get("/", response_class=HTMLResponse)
def home(user_session: PageSessionDep):
    return redirect("/projects" if user_session else "/login")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request):
    return render(request, "login.html", error=None)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, session: SessionDep, settings: SettingsDep,
          email: Annotated[str, Form()] = "", password: Annotated[str, Form()] = ""):
    try:
        user = auth.authenticate(session=session, email=email, password=password)
    except auth.AuthError as exc:
        return render(request, "login.html", code=401, error=str(exc), email=email)
    token, _ = auth.start_session(session=session, user=user, days=settings.session_days)
    session.commit()
    response = redirect("/projects")
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=settings.cookie_secure, max_age=settings.session_days * 86400)
    return response


@router.post("/logout")
def logout(request: Request, form: CsrfFormDep, session: SessionDep):
    auth.end_session(session=session, token=request.cookies.get(SESSION_COOKIE, ""))
    session.commit()
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE)
    return response
