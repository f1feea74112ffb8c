// Renders this server's own document. validatorUrl null: Swagger UI would
// otherwise send the document to an outside validator.
window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  withCredentials: true,
});
