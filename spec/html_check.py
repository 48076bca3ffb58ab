#!/usr/bin/python3
"""Open HTML reports in headless Chromium with the network off, as a reader
would, and say what the reader got: one JSON object a line per file.

    /usr/bin/python3 spec/html_check.py [--shots DIR] [--width PX] [--height PX] [nojs:]FILE.html...

For each file: the console's SEVERE entries, every request the page made
(only the file itself is expected), the number of charts drawn and whether
each canvas has pixels that are not blank, the text of the table cells that
hold the hostile payload's markers, whether the payload ran (it sets
window.__pwned) or left elements of its own (img[src=x], a script more),
and a screenshot of the page (its top --height pixels; path, bytes).
A file named as nojs:FILE is opened with its scripts disabled, as a mail
client that strips them shows it.  One browser for all the files.
Used by spec/html_spec.lua; needs chromium, chromium-driver and
python3-selenium (Debian).
"""
import base64
import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

PROBE = r"""
var out = { title: document.title };
out.drawn = document.documentElement.getAttribute("data-charts-drawn");
out.canvases = [];
document.querySelectorAll("canvas").forEach(function (c) {
  var info = { width: c.width, height: c.height, inked: 0 };
  try {
    var px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    for (var i = 3; i < px.length; i += 4) { if (px[i] !== 0) { info.inked += 1; } }
  } catch (e) { info.error = String(e); }
  out.canvases.push(info);
});
out.cells = [];
document.querySelectorAll("table.rows td").forEach(function (td) {
  var t = td.textContent;
  if (/[<>"'&]/.test(t)) { out.cells.push(t); }
});
out.headers = [];
document.querySelectorAll("table.rows th").forEach(function (th) { out.headers.push(th.textContent); });
out.figcaptions = [];
document.querySelectorAll("figcaption strong").forEach(function (f) { out.figcaptions.push(f.textContent); });
out.pwned = window.__pwned === undefined ? false : String(window.__pwned);
out.injected_img = document.querySelectorAll("img").length;
out.scripts = document.querySelectorAll("script").length;
out.tables = document.querySelectorAll("table.rows").length;
out.body_rows = document.querySelectorAll("table.rows tbody tr").length;
out.facts = {};
document.querySelectorAll("dl.facts div").forEach(function (d) {
  out.facts[d.querySelector("dt").textContent] = d.querySelector("dd").textContent;
});
out.figures = document.querySelectorAll("figure").length;
out.open_details = document.querySelectorAll("figure details[open]").length;
out.hidden_plots = document.querySelectorAll("figure .plot[hidden]").length;
out.height = Math.max(document.body.scrollHeight, document.documentElement.scrollHeight);
return out;
"""


def browser(width):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                 "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--force-device-scale-factor=1",
                 "--window-size=%d,900" % width):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def requests_of(perf):
    urls = []
    for entry in perf:
        try:
            msg = json.loads(entry["message"])["message"]
        except (KeyError, ValueError):
            continue
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def check(driver, path, shots, width, cap):
    # "nojs:FILE": the page's scripts do not run (as in an e-mail preview).
    nojs = path.startswith("nojs:")
    if nojs:
        path = path[5:]
    driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": nojs})
    url = "file://" + os.path.abspath(path)
    driver.get_log("browser")       # what an earlier page left
    driver.get_log("performance")
    driver.get(url)
    # The page draws when its scripts run; wait for their mark (or 5 s).
    deadline = time.time() + (0 if nojs else 5)
    while time.time() < deadline:
        if driver.execute_script("return document.readyState") == "complete" and \
                driver.execute_script("return document.documentElement.getAttribute('data-charts-drawn')"):
            break
        time.sleep(0.05)
    out = driver.execute_script(PROBE)
    out["file"] = path
    out["nojs"] = nojs
    logs = driver.get_log("browser")
    out["severe"] = [e["message"] for e in logs if e.get("level") == "SEVERE"]
    out["console"] = [e["message"] for e in logs]
    out["requests"] = requests_of(driver.get_log("performance"))
    out["foreign_requests"] = [u for u in out["requests"] if u != url]
    if shots:
        # The whole page, through the DevTools protocol (one image).
        height = min(int(out["height"]), cap)
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
        name = os.path.join(shots, os.path.basename(path) + (".nojs" if nojs else "") + ".png")
        with open(name, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        out["screenshot"] = name
        out["screenshot_bytes"] = os.path.getsize(name)
    return out


def main(argv):
    shots, width, cap, files = None, 1000, 16000, []
    i = 0
    while i < len(argv):
        if argv[i] == "--shots":
            shots, i = argv[i + 1], i + 2
        elif argv[i] == "--height":
            cap, i = int(argv[i + 1]), i + 2
        elif argv[i] == "--width":
            width, i = int(argv[i + 1]), i + 2
        else:
            files.append(argv[i])
            i += 1
    if shots:
        os.makedirs(shots, exist_ok=True)
    driver = browser(width)
    try:
        for path in files:
            try:
                result = check(driver, path, shots, width, cap)
            except Exception as e:  # one file's failure is its own line
                result = {"file": path, "error": "%s: %s" % (type(e).__name__, e)}
            print(json.dumps(result), flush=True)
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
