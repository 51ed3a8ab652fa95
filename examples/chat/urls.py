"""URLconf of the chat example (the WebSocket, the tasks and http.disconnect are in routing.py)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("go/", views.go, name="go"),
    path("room/<slug:name>/", views.room, name="room"),
    path("tasks/", views.start_task, name="start_task"),
    path("tasks/<int:pk>/", views.task_status, name="task_status"),
    path("counter/", views.counter, name="counter"),
    path("counter/poll/", views.counter_poll, name="counter_poll"),
    path("stats/", views.stats_page, name="stats"),
    path("stats.json", views.stats_json, name="stats_json"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", views.signup, name="signup"),
    path("static/<path:path>", views.static, name="static"),
]
