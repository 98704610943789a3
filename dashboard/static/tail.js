// The audit log's live tail: new events arrive as server-sent events and are added at the
// top of the table. Text only (textContent), never markup from an event.
(function () {
  var table = document.getElementById("tail");
  if (!table || !window.EventSource) { return; }
  var body = table.querySelector("tbody");
  var url = "/audit/tail?tenant=" + encodeURIComponent(table.dataset.tenant) +
    "&after=" + encodeURIComponent(table.dataset.after);
  var source = new EventSource(url);
  var status = document.getElementById("tail-status");
  source.onopen = function () { status.textContent = "live"; };
  source.onerror = function () { status.textContent = "reconnecting"; };
  source.onmessage = function (message) {
    var e = JSON.parse(message.data);
    var row = document.createElement("tr");
    row.id = "tail-" + e.sequence;
    [e.sequence, e.occurred_at, e.kind, e.actor, e.subject, e.reason].forEach(function (value) {
      var cell = document.createElement("td");
      cell.textContent = String(value);
      row.appendChild(cell);
    });
    body.insertBefore(row, body.firstChild);
  };
})();
