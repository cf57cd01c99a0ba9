"""Sign-in and sign-out pages."""

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from app.services import auth
from app.services.ratelimit import retry_after
from app.web.deps import SESSION_COOKIE, SessionDep, SettingsDep
from app.web.pages.common import (
    CsrfFormDep,
    PageSessionDep,
    page_router,
    redirect,
    render,
)
from app.web.security import SignInGuardDep, client_ip, from_another_site, safe_next

router = page_router()


@router.get("/", response_class=HTMLResponse)
def home(user_session: PageSessionDep):
    return redirect("/projects" if user_session else "/login")


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = ""):
    return render(request, "login.html", error=None, next=safe_next(next))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, session: SessionDep, settings: SettingsDep,
                guard: SignInGuardDep, email: Annotated[str, Form()] = "",
                password: Annotated[str, Form()] = "", next: Annotated[str, Form()] = ""):
    if from_another_site(request):
        return render(request, "error.html", code=403, title="Sign-in refused", back="/login",
                      message="This sign-in form was sent from another site.")
    next = safe_next(next)  # a path on this site, or nothing
    try:
        user = await guard.authenticate(session=session, email=email, password=password,
                                        ip=client_ip(request))
    except auth.SignInThrottled as exc:
        response = render(request, "login.html", code=429, error=str(exc), email=email,
                          next=next)
        response.headers["Retry-After"] = retry_after(exc.retry_after_s)
        return response
    except auth.AuthError as exc:
        return render(request, "login.html", code=401, error=str(exc), email=email, next=next)
    token = await run_in_threadpool(_start_session, session, user, settings.session_days)
    response = redirect(next or "/projects")
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=settings.cookie_secure, max_age=settings.session_days * 86400)
    return response


def _start_session(session, user, days: int) -> str:
    token, _ = auth.start_session(session=session, user=user, days=days)
    session.commit()
    return token


@router.post("/logout")
def logout(request: Request, form: CsrfFormDep, session: SessionDep):
    auth.end_session(session=session, token=request.cookies.get(SESSION_COOKIE, ""))
    session.commit()
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE)
    return response
