"""Project pages: the list, a new project with its labels, the overview, a new label."""

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse

from app.services import curation, gathering, jobs, projects, search, upload_history
from app.services.errors import InvalidInputError
from app.web.deps import SessionDep, SettingsDep, StorageDep
from app.web.pages.common import (
    CsrfFormDep,
    PageProjectDep,
    SignedInDep,
    page_router,
    project_context,
    redirect,
    render,
    signed_in_context,
)

router = page_router()


@router.get("/projects", response_class=HTMLResponse)
def project_list(request: Request, session: SessionDep, user_session: SignedInDep,
                 notice: str = ""):
    owned_projects = projects.list_projects(session=session, owner=user_session.user)
    rows = [(p, projects.image_counts(session=session, project=p)) for p in owned_projects]
    return render(request, "projects.html", **signed_in_context(user_session, rows=rows,
                                                                notice=notice))


@router.post("/projects")
def project_create(form: CsrfFormDep, session: SessionDep, user_session: SignedInDep,
                   name: Annotated[str, Form()] = "",
                   label: Annotated[list[str], Form()] = (),
                   query: Annotated[list[str], Form()] = ()):
    project = projects.create_project(session=session, owner=user_session.user, name=name)
    queries = list(query) + [""] * len(label)
    for label_name, label_query in zip(label, queries, strict=False):
        if label_name.strip():
            projects.add_label(session=session, project=project, name=label_name,
                               query=label_query.strip() or None)
    session.commit()
    return redirect(f"/projects/{project.id}")


@router.get("/projects/{project_id}", response_class=HTMLResponse)
def project_page(request: Request, project: PageProjectDep, session: SessionDep,
                 user_session: SignedInDep, settings: SettingsDep, notice: str = ""):
    project_jobs = jobs.list_jobs(session=session, project=project, limit=8)
    for job in project_jobs:
        jobs.fail_if_stale(job=job, stale_seconds=settings.job_stale_seconds)
    session.commit()
    return render(request, "project.html", **project_context(
        session, user_session, project, "overview", jobs=project_jobs, notice=notice,
        samples=curation.sample_images(session=session, project=project),
        label_totals=projects.label_image_totals(session=session, project=project),
        latest=curation.latest_model(session=session, project=project),
        uploads=upload_history.list_uploads(session=session, project=project),
        uploads_shown=upload_history.count_uploads(session=session, project=project),
        max_images=gathering.MAX_IMAGES, default_images=settings.search_max_images,
        licences=search.LICENCES))


@router.post("/projects/{project_id}/labels")
def label_add(form: CsrfFormDep, project: PageProjectDep, session: SessionDep,
              name: Annotated[str, Form()] = "", query: Annotated[str, Form()] = ""):
    label = projects.add_label(session=session, project=project, name=name,
                               query=query.strip() or None)
    session.commit()
    return redirect(f"/projects/{project.id}", notice=f"added the label “{label.name}”")


@router.post("/projects/{project_id}/rename")
def project_rename(form: CsrfFormDep, project: PageProjectDep, session: SessionDep,
                   name: Annotated[str, Form()] = ""):
    projects.rename_project(session=session, project=project, name=name)
    session.commit()
    return redirect(f"/projects/{project.id}", notice=f"renamed the project “{project.name}”")


@router.post("/projects/{project_id}/delete")
def project_delete(form: CsrfFormDep, project: PageProjectDep, session: SessionDep,
                   storage: StorageDep, confirm: Annotated[str, Form()] = ""):
    """Delete a project once its name is typed again: its images, models and deployments go."""
    if " ".join(confirm.split()) != project.name:
        raise InvalidInputError("type the project's name exactly to delete it")
    name = project.name
    projects.delete_project(session=session, storage=storage, project=project)
    return redirect("/projects", notice=f"deleted the project “{name}”")


@router.post("/projects/{project_id}/labels/{label_id}")
def label_update(label_id: int, form: CsrfFormDep, project: PageProjectDep,
                 session: SessionDep, name: Annotated[str, Form()] = "",
                 query: Annotated[str, Form()] = ""):
    label = projects.get_label(project=project, label_id=label_id)
    old = label.name
    projects.update_label(session=session, project=project, label=label, name=name,
                          query=query)
    session.commit()
    notice = (f"renamed “{old}” to “{label.name}”" if label.name != old
              else f"saved the label “{label.name}”")
    return redirect(f"/projects/{project.id}", notice=notice)


@router.post("/projects/{project_id}/labels/{label_id}/delete")
def label_delete(label_id: int, form: CsrfFormDep, project: PageProjectDep,
                 session: SessionDep):
    label = projects.get_label(project=project, label_id=label_id)
    name = label.name
    unlabelled = projects.delete_label(session=session, project=project, label=label)
    session.commit()
    kept = (f"; its {unlabelled} image{'s' if unlabelled != 1 else ''} stay, unlabelled"
            if unlabelled else "")
    return redirect(f"/projects/{project.id}", notice=f"deleted the label “{name}”{kept}")
