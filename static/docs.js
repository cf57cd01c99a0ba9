// The API reference pages: Swagger UI or ReDoc on the app's OpenAPI document, from the app's
// own copies of their files. "Try it out" uses the browser's session: unsafe requests carry
// its CSRF token (or send an API key with "Authorize").
const root = document.getElementById("docs");
const csrf = document.querySelector('meta[name="csrf-token"]')?.content;

if (root.dataset.kind === "redoc") {
  Redoc.init(root.dataset.openapiUrl, {}, root);
} else {
  SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#docs",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    requestInterceptor: (request) => {
      if (csrf) request.headers["X-CSRF-Token"] = csrf;
      return request;
    },
  });
}
