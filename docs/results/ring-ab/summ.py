import json,statistics as st,sys
rows=[json.loads(l) for l in open(sys.argv[1] if len(sys.argv)>1 else 'full.jsonl') if l.strip()]
def med(a): return st.median(a) if a else float('nan')
perf={v:[x for x in rows if x['kind']=='perf' and x['v']==v] for v in ['base','ring']}
print('perf rounds', len(perf['base']), len(perf['ring']))
for v in ['base','ring']:
    p=perf[v]
    print(v,'iops',[round(x['r']['iops']/1e3) for x in p],'median',round(med([x['r']['iops'] for x in p])),'cpuNs',[round(x['r']['cpuNsPerIo']) for x in p],'median',round(med([x['r']['cpuNsPerIo'] for x in p])), 'p50', round(med([x['r']['latencyUs']['p50'] for x in p]),1))
pb={x['i']:x for x in perf['base']}; pr={x['i']:x for x in perf['ring']}
ks=sorted(set(pb)&set(pr))
print('perf paired iops ratio median', round(med([pr[k]['r']['iops']/pb[k]['r']['iops'] for k in ks]),3), 'cpuNs ratio median', round(med([pr[k]['r']['cpuNsPerIo']/pb[k]['r']['cpuNsPerIo'] for k in ks]),3))
h={v:[x for x in rows if x['kind']=='homid' and x['v']==v] for v in ['base','ring']}
print('homid rounds', len(h['base']), len(h['ring']))
def row(x,s): return [r for r in x['r']['rows'] if r['scenario']==s][0]
for s in ['raw x1','mediated x1']:
    for v in ['base','ring']:
        meds=[row(x,s)['iops'] for x in h[v]]
        allsamples=[y for x in h[v] for y in row(x,s)['samples']]
        print(s,v,'per-invocation medians',[round(m/1e3) for m in meds],'median of medians',round(med(meds)),'median of all samples',round(med(allsamples)))
    hb={x['i']:x for x in h['base']}; hr={x['i']:x for x in h['ring']}
    ks=sorted(set(hb)&set(hr))
    print(s,'paired ratio median', round(med([row(hr[k],s)['iops']/row(hb[k],s)['iops'] for k in ks]),3))
print('loads', [x['load'] for x in rows])
