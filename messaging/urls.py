from django.urls import path

from messaging import api, views

app_name = "messaging"
# <str:...> in the API, not <int:...>: a segment that is no id must still get the API's JSON 404.
urlpatterns = [
    path("api/conversations", api.ConversationsView.as_view(), name="conversations"),
    path("api/conversations/<str:conversation_id>", api.ConversationDetailView.as_view(), name="conversation"),
    path("api/conversations/<str:conversation_id>/messages", api.MessagesView.as_view(), name="messages"),
    path(
        "api/conversations/<str:conversation_id>/messages/<str:message_id>",
        api.MessageDetailView.as_view(),
        name="message",
    ),
    path("api/conversations/<str:conversation_id>/participants", api.ParticipantsView.as_view(), name="participants"),
    path(
        "api/conversations/<str:conversation_id>/participants/<str:member_id>",
        api.ParticipantDetailView.as_view(),
        name="participant",
    ),
    path("api/conversations/<str:conversation_id>/typing", api.TypingView.as_view(), name="typing"),
    path("api/conversations/<str:conversation_id>/read", api.ReadView.as_view(), name="read"),
    path("messages/", views.inbox, name="inbox"),
    path("messages/<int:conversation_id>/", views.inbox, name="page"),
]
