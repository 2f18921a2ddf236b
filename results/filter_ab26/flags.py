import glob, gsu.index
for p in sorted(glob.glob("/work/tmp/s23/fcache/*_s0.gsu")):
    idx = gsu.index.load(p)
    st = idx._fits[None].settings if None in idx._fits else idx._fit(None).settings
    print(p.split("/")[-1][:24], "bands", st.bands, "away_exact", st.band_away_exact, "lim %.0f" % st.exact_max_rows)
