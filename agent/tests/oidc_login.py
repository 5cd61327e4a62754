"""A browser's part of OpenID Connect against a real provider, over HTTP with a cookie jar:
`login USER JAR` runs the authorization-code flow (dev-interactions login form, then the code
exchanged at the token endpoint) and prints the tokens; `logout JAR ID_TOKEN` runs RP-initiated
logout (the provider's confirmation form), after which the provider sends back-channel logouts.
The jar file keeps the browser's session between the two.
"""
import json
import pickle
import re
import sys
from urllib.parse import parse_qs, urljoin, urlparse

import requests

issuer = sys.argv[1]
action = sys.argv[2]
CLIENT, SECRET, REDIRECT = "shop", "shop-secret-0123456789abcdef", "http://127.0.0.1/callback"


def form(html):
    """The first form's action and its hidden fields."""
    action = re.search(r'<form[^>]*action="([^"]+)"', html).group(1)
    fields = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html))
    return action.replace("&amp;", "&"), fields


def follow(s, r):
    """Follows redirects within the provider; stops at the client's redirect URI."""
    while r.status_code in (302, 303):
        loc = urljoin(r.url, r.headers["location"])
        if loc.startswith(REDIRECT) or loc.startswith("http://127.0.0.1/bye"):
            return loc
        r = s.get(loc, allow_redirects=False)
    return r


if action == "login":
    user, jar = sys.argv[3], sys.argv[4]
    s = requests.Session()
    r = s.get(f"{issuer}/auth", params={"client_id": CLIENT, "response_type": "code", "scope": "openid api",
                                        "redirect_uri": REDIRECT, "resource": "https://api.shop.example"},
              allow_redirects=False)
    page = follow(s, r)
    action_url, fields = form(page.text)
    r = s.post(urljoin(page.url, action_url), data={**fields, "login": user, "password": "any"}, allow_redirects=False)
    done = follow(s, r)
    if not isinstance(done, str):
        # A consent screen, if the provider shows one.
        action_url, fields = form(done.text)
        r = s.post(urljoin(done.url, action_url), data=fields, allow_redirects=False)
        done = follow(s, r)
    code = parse_qs(urlparse(done).query)["code"][0]
    t = requests.post(f"{issuer}/token", data={"grant_type": "authorization_code", "code": code,
                                              "redirect_uri": REDIRECT, "resource": "https://api.shop.example"},
                      auth=(CLIENT, SECRET))
    t.raise_for_status()
    with open(jar, "wb") as f:
        pickle.dump(s.cookies, f)
    print(json.dumps(t.json()))
elif action == "logout":
    jar, id_token = sys.argv[3], sys.argv[4]
    s = requests.Session()
    with open(jar, "rb") as f:
        s.cookies.update(pickle.load(f))
    r = s.get(f"{issuer}/session/end", params={"id_token_hint": id_token,
                                               "post_logout_redirect_uri": "http://127.0.0.1/bye"},
              allow_redirects=False)
    page = follow(s, r)
    action_url, fields = form(page.text)
    r = s.post(urljoin(page.url, action_url), data={**fields, "logout": "yes"}, allow_redirects=False)
    done = follow(s, r)
    print(json.dumps({"ended": isinstance(done, str) and done.startswith("http://127.0.0.1/bye")}))
