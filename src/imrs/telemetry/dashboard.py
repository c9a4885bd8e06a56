"""The dashboard page served at ``GET /``: one self-contained HTML document.

Inline CSS and JavaScript, no external resource (the operator's browser may have no internet):
the page carries the data of the moment it was served (so it draws at once), then fetches
``/history`` every few seconds and redraws.  Every chart is an ``<svg>`` drawn by the script,
with ``data-points`` saying how many data points it drew.
"""

from __future__ import annotations

import json

#: Seconds between the page's refreshes of /history.
REFRESH_SECONDS = 5

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>imrs dashboard</title>
<style>
body{font:14px/1.35 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header{background:#1f2a36;color:#eee;padding:8px 16px;display:flex;flex-wrap:wrap;gap:6px 22px;align-items:baseline}
header b{font-size:17px;color:#fff}
.ok{color:#7fd67f}.bad{color:#ff8080}.warn{color:#ffc857}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:12px;padding:12px}
section{background:#fff;border-radius:6px;padding:8px 12px;box-shadow:0 1px 2px #0002}
section.wide{grid-column:1/-1}
h2{font-size:13px;font-weight:600;margin:0 0 4px;color:#555;text-transform:uppercase;letter-spacing:.04em}
.big{font-size:30px;font-weight:600}.mid{font-size:20px;font-weight:600}.sub{color:#666;font-size:12px}
svg{width:100%;height:auto;display:block}svg text{font-size:11px;fill:#555}
.legend span{margin-right:12px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
.row{display:flex;gap:18px;align-items:center}
</style></head><body>
<header id="head">imrs</header>
<main>
<section class="wide"><h2>Queries per second (the chart: answers by rcode)</h2>
<div class="row"><div><span class="big" id="qps">-</span> <span class="sub" id="qps-span"></span></div>
<div class="legend" id="rcode-legend"></div></div>
<svg id="chart-rcode" viewBox="0 0 900 200" data-points="0"></svg></section>
<section><h2>Junk share (NXDOMAIN of all responses)</h2>
<div class="row"><span class="big" id="junk">-</span><span class="sub" id="junk-total"></span></div>
<svg id="chart-junk" viewBox="0 0 420 80" data-points="0"></svg></section>
<section><h2>RRL activity (per second)</h2>
<div class="row"><span class="mid" id="rrl-now">-</span><span class="sub" id="rrl-total"></span></div>
<svg id="chart-rrl" viewBox="0 0 420 80" data-points="0"></svg></section>
<section><h2>Top queried TLDs</h2><svg id="chart-tlds" viewBox="0 0 420 200" data-points="0"></svg></section>
<section><h2>Top query types</h2><svg id="chart-qtypes" viewBox="0 0 420 200" data-points="0"></svg></section>
<section><h2>Transport mix (queries)</h2><svg id="chart-transport" viewBox="0 0 420 200" data-points="0"></svg></section>
<section><h2>Response sizes (octets)</h2><svg id="chart-sizes" viewBox="0 0 420 200" data-points="0"></svg></section>
</main>
<script id="initial" type="application/json">__DATA__</script>
<script>
"use strict";
const RCODES=[["NOERROR","#4c9a2a"],["NXDOMAIN","#e8871e"],["REFUSED","#c0392b"],["FORMERR","#8e44ad"],["other","#999"]];
const esc=s=>String(s).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"})[c]);
const num=v=>v>=1e9?(v/1e9).toFixed(1)+"G":v>=1e6?(v/1e6).toFixed(1)+"M":v>=1e4?(v/1e3).toFixed(1)+"k":
  v>=100?Math.round(v).toString():v>=10?v.toFixed(1):v.toFixed(2);
const count=v=>v>=1e4?num(v):String(Math.round(v));
const pct=v=>v==null?"-":(100*v).toFixed(1)+"%";
function dur(s){if(s==null)return"-";s=Math.abs(s);return s>=86400?(s/86400).toFixed(1)+" d":s>=3600?(s/3600).toFixed(1)+" h":
  s>=60?Math.round(s/60)+" min":Math.round(s)+" s";}
function draw(id,inner,points){const el=document.getElementById(id);el.innerHTML=inner;el.setAttribute("data-points",points);}
/* stacked areas (or lines) over time: layers = [[name, color, value(point)]] */
function timeChart(id,series,layers,stack,W,H){
  const n=series.length,L=40,R=6,T=6,B=18,w=W-L-R,h=H-T-B;
  if(!n){draw(id,`<text x="${W/2}" y="${H/2}" text-anchor="middle">waiting for samples</text>`,0);return;}
  const t0=series[0].t-series[0].seconds,t1=series[n-1].t,pts=[{t:t0,p:series[0]}].concat(series.map(p=>({t:p.t,p})));
  const tops=pts.map(q=>{let s=0;return layers.map(l=>{const v=l[2](q.p)||0;s=stack?s+v:v;return s;});});
  const max=Math.max(1e-9,...tops.flat())*1.1,x=t=>L+w*(t-t0)/Math.max(1e-9,t1-t0),y=v=>T+h-h*v/max;
  let out=`<line x1="${L}" y1="${T+h}" x2="${L+w}" y2="${T+h}" stroke="#ccc"/><line x1="${L}" y1="${T}" x2="${L+w}" y2="${T}" stroke="#eee"/>`+
    `<text x="${L-4}" y="${T+9}" text-anchor="end">${num(max)}</text><text x="${L-4}" y="${T+h}" text-anchor="end">0</text>`+
    `<text x="${L}" y="${H-4}">-${dur(t1-t0)}</text><text x="${L+w}" y="${H-4}" text-anchor="end">now</text>`;
  for(let i=layers.length-1;i>=0;i--){
    const top=pts.map((q,j)=>`${x(q.t).toFixed(1)},${y(tops[j][i]).toFixed(1)}`);
    if(stack){const base=pts.map((q,j)=>`${x(q.t).toFixed(1)},${y(i?tops[j][i-1]:0).toFixed(1)}`).reverse();
      out+=`<polygon points="${top.concat(base).join(" ")}" fill="${layers[i][1]}" fill-opacity=".85"/>`;}
    else out+=`<polyline points="${top.join(" ")}" fill="none" stroke="${layers[i][1]}" stroke-width="2"/>`;
  }
  draw(id,out,n);
}
/* horizontal bars: items = [[label, value]]; shares of `all` (default: of the items' sum) */
function bars(id,items,color,W,all){
  const rows=items.length,H=Math.max(40,rows*20+6),L=86,R=96,w=W-L-R,max=Math.max(1,...items.map(i=>i[1]));
  const total=all||items.reduce((s,i)=>s+i[1],0)||1;let out="";
  items.forEach(([label,v],k)=>{const y=4+k*20,bw=Math.max(v?1:0,w*v/max);
    out+=`<text x="${L-6}" y="${y+12}" text-anchor="end">${esc(label)}</text><rect x="${L}" y="${y}" width="${bw.toFixed(1)}" height="15" fill="${color}"/>`+
      `<text x="${L+bw+4}" y="${y+12}">${count(v)} (${(100*v/total).toFixed(0)}%)</text>`;});
  const el=document.getElementById(id);el.setAttribute("viewBox",`0 0 ${W} ${H}`);draw(id,out,rows);
}
function render(d){
  const s=d.series,last=s.length?s[s.length-1]:null;
  let head=`<b>${esc(d.instance)}</b><span class="${d.ready?"ok":"bad"}">${d.draining?"draining":d.ready?"ready":"not ready: "+esc(d.reasons.join("; "))}</span>`+
    `<span>workers ${d.workers.live}/${d.workers.count}</span><span>up ${dur(d.uptime)}</span>`;
  for(const z of d.zones){const sig=z.signature_expiry_seconds,cls=!z.served?"bad":sig!=null&&sig<7*86400?"warn":"ok";
    head+=`<span class="${cls}">${z.zone=="."?"root":esc(z.zone)} serial <b class="serial">${esc(z.serial)}</b> age ${dur(z.age_seconds)}`+
      (sig!=null?`, signatures ${(sig/86400).toFixed(1)} d`:"")+(z.expiry_seconds!=null?`, expires ${dur(z.expiry_seconds)}`:"")+`</span>`;}
  document.getElementById("head").innerHTML=head+`<span class="sub">imrs ${esc(d.version)}</span>`;
  document.getElementById("qps").textContent=last?num(last.qps)+" q/s":"- q/s";
  document.getElementById("qps-span").textContent=last?`received over the last ${dur(last.seconds)}, ${num(last.rps)} answers/s; ${num(d.totals.queries)} queries since start`:"";
  document.getElementById("rcode-legend").innerHTML=RCODES.map(([n,c])=>`<span><i style="background:${c}"></i>${n} ${last?num(last.rcode[n]):"-"}</span>`).join("");
  timeChart("chart-rcode",s,RCODES.map(([n,c])=>[n,c,p=>p.rcode[n]]),true,900,200);
  document.getElementById("junk").textContent=pct(last&&last.junk!=null?last.junk:d.junk);
  document.getElementById("junk-total").textContent=`${pct(d.junk)} since start`;
  timeChart("chart-junk",s,[["junk","#e8871e",p=>p.junk]],false,420,80);
  document.getElementById("rrl-now").textContent=last?`${num(last.rrl.dropped)} dropped · ${num(last.rrl.slipped)} slipped`:"-";
  document.getElementById("rrl-total").textContent=`since start: ${count(d.rrl.dropped)} dropped, ${count(d.rrl.slipped)} slipped of ${count(d.rrl.responses)}`;
  timeChart("chart-rrl",s,[["dropped","#c0392b",p=>p.rrl.dropped],["slipped","#e8a21e",p=>p.rrl.slipped]],false,420,80);
  bars("chart-tlds",d.tlds,"#d35400",420,d.tld_queries);
  bars("chart-qtypes",d.qtypes,"#3b7dd8",420);
  const t=d.transport;
  bars("chart-transport",[["UDP IPv4",t.udp_ipv4],["UDP IPv6",t.udp_ipv6],["TCP IPv4",t.tcp_ipv4],["TCP IPv6",t.tcp_ipv6]],"#2a9d8f",420);
  bars("chart-sizes",d.sizes.response,"#6c5ce7",420);
}
render(JSON.parse(document.getElementById("initial").textContent));
setInterval(()=>fetch("/history",{cache:"no-store"}).then(r=>r.json()).then(render).catch(()=>{}),__REFRESH__*1000);
</script></body></html>
"""


def page(data: dict[str, object]) -> bytes:
    """The page, carrying ``data`` (what ``/history`` answers) so that it draws at once."""
    text = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return _PAGE.replace("__REFRESH__", str(REFRESH_SECONDS)).replace("__DATA__", text).encode()
