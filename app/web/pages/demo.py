"""The public demo page of a deployment (embeddable)."""

from fastapi import Request
from fastapi.responses import HTMLResponse

from app.models import Project
from app.services import deployments, predictions
from app.services.errors import NotFoundError
from app.web.deps import SessionDep, SettingsDep, StorageDep
from app.web.pages.common import PageSessionDep, page_router, render

router = page_router()


@router.get("/demo/{slug}", response_class=HTMLResponse)
def demo_page(request: Request, slug: str, session: SessionDep, storage: StorageDep,
              settings: SettingsDep, user_session: PageSessionDep, embed: bool = False):
    user = user_session.user if user_session else None
    try:
        deployment = deployments.get_deployment(session=session, slug=slug)
        if not deployments.can_predict(session=session, deployment=deployment, user=user):
            raise NotFoundError(slug)
    except NotFoundError:
        return render(request, "error.html", code=404,
                      message=f"There is no demo called “{slug}” (or it is private).")
    model = deployment.model
    project = session.get(Project, deployment.project_id)
    examples = predictions.example_images(session=session, storage=storage,
                                          deployment=deployment,
                                          per_label=settings.demo_examples)
    return render(request, "demo.html", deployment=deployment, model=model, title=project.name,
                  version=deployments.model_version(model),
                  metrics=model.metrics or {}, embed=embed, base=str(request.base_url),
                  examples=[(i, image.label.name if image.label else "")
                            for i, image in enumerate(examples)],
                  threshold=predictions.unknown_threshold(deployment=deployment, model=model),
                  unknown_score=deployments.unknown_score(model),
                  csrf_token=user_session.csrf_token if user_session else "")
