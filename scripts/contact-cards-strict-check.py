#!/usr/bin/env python3
# Strict re-check of a contact-cards agent: greedy cards for 20 seeded prompts,
# counted as passing only if the card fits the schema and its "email" equals the
# prompt's exactly. Usage: scripts/contact-cards-strict-check.py [ADAPTER_DIR]
# (run from the repository root after a release build).
import json, random, subprocess, sys, itertools, re
names=["Lena Fischer","Tomás Silva","Priya Nair","Ahmed Hassan","Sofia Rossi","Kenji Sato","Amara Okafor","Lucas Martin","Ingrid Berg","Mateo García","Chloé Dubois","Yusuf Demir"]
cities=["Hamburg","Porto","Chennai","Cairo","Turin","Osaka","Lagos","Lyon","Bergen","Seville","Montréal","Izmir"]
emails=["lena@mail.test","t.silva@post.test","priya.n@mail.test","ahmed@box.test","sofia.r@post.test","kenji@mail.test","amara@box.test","lucas.m@post.test"]
random.seed(7)
combos=random.sample(list(itertools.product(names,cities,emails)),20)
adapter=sys.argv[1] if len(sys.argv)>1 else None
strict=loose=0
for n,c,e in combos:
    p=f'Write the contact card as JSON with the keys "name", "email" and "city" for: {n} lives in {c}; email {e}.'
    cmd=["target/release/arena","model","generate","--prompt",p,"--max-tokens","64","--temperature","0","--repetition-penalty","1"]
    if adapter: cmd+=["--adapter",adapter]
    out=subprocess.run(cmd,capture_output=True,text=True).stdout
    t=out.strip()
    i=min([x for x in (t.find('{'),t.find('[')) if x>=0] or [-1])
    obj=None
    if i>=0:
        try: obj,_=json.JSONDecoder().raw_decode(t[i:])
        except Exception: obj=None
    ok_schema=isinstance(obj,dict) and set(obj)<= {"name","email","phone","city"} and "name" in obj and "email" in obj and isinstance(obj.get("email"),str) and re.match(r'^[^@\s]+@[^@\s]+\.[a-z]{2,}$',obj["email"]) is not None
    loose+= ok_schema and e in t.lower()
    strict+= ok_schema and obj["email"].lower()==e
print(f"{adapter or 'base'}: schema+contains {loose}/20, schema+exact email {strict}/20")
