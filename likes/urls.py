from django.urls import path

from likes import api

app_name = "likes"
# <str:...>, not <int:...>: a segment that is no id must still get the API's JSON 404, not Django's page.
urlpatterns = [
    path("videos", api.VideoListView.as_view(), name="videos"),
    path("videos/<str:video_id>", api.VideoDetailView.as_view(), name="video"),
    path("videos/<str:video_id>/likes", api.LikeView.as_view(), name="likes"),
    path("videos/<str:video_id>/comments", api.CommentsView.as_view(), name="comments"),
]
