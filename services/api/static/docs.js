// The API's interactive documentation: Swagger UI on the app's own OpenAPI document.
window.ui = SwaggerUIBundle({ url: "/api/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
