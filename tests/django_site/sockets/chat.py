"""The README's chat tutorial: one room per URL, each line signed with the site's logged-in user."""
import json

from worker import Group
from worker.auth import channel_session_user, channel_session_user_from_http
from worker.routing import route


@channel_session_user_from_http
def chat_connect(message, room):
    message.channel_session["room"] = room
    Group(f"chat-{room}").add(message.reply_channel)
    message.reply_channel.send({"accept": True})


@channel_session_user
def chat_receive(message):
    room = message.channel_session["room"]
    name = message.user.username if message.user.is_authenticated else "anonymous"
    line = json.dumps({"user": name, "text": message["text"]})
    Group(f"chat-{room}").send({"text": line})


@channel_session_user
def chat_disconnect(message):
    Group(f"chat-{message.channel_session['room']}").discard(message.reply_channel)


chat_routing = [
    route("websocket.connect", chat_connect, path=r"^/chat/(?P<room>\w+)/$"),
    route("websocket.receive", chat_receive, path=r"^/chat/"),
    route("websocket.disconnect", chat_disconnect, path=r"^/chat/"),
]
